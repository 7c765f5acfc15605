package demo

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// screen writes the demo's log lines and its table of electors. On a
// terminal the table stays under the log and is redrawn in place when it
// changes; anywhere else (a pipe, a file) each new table is written after
// the lines before it, so a log reads top to bottom without escape codes.
type screen struct {
	mu  sync.Mutex
	out io.Writer
	// term is out when out is a terminal, else nil.
	term *os.File
	// hint is a line drawn under the table on a terminal.
	hint string
	// last is the last table shown; drawn is how many terminal rows the
	// table and its hint take on the screen (0: none drawn).
	last  string
	drawn int
}

func newScreen(out io.Writer) *screen {
	s := &screen{out: out}
	if f, ok := out.(*os.File); ok {
		if _, ok := termWidth(f); ok {
			s.term = f
		}
	}
	return s
}

// log writes lines above the table.
func (s *screen) log(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term == nil {
		s.write(text)
		return
	}
	redraw := s.drawn > 0
	s.erase()
	s.write(text)
	if redraw {
		s.draw()
	}
}

// table shows table, if it differs from the last one.
func (s *screen) table(table string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if table == s.last {
		return
	}
	s.last = table
	if s.term == nil {
		s.write("\n" + table)
		return
	}
	s.erase()
	s.draw()
}

// setHint sets the line under the table on a terminal.
func (s *screen) setHint(hint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hint = hint
	if s.term != nil && s.drawn > 0 {
		s.erase()
		s.draw()
	}
}

// freeze leaves the table where it is: what is logged next goes under it.
func (s *screen) freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term != nil && s.drawn > 0 {
		// The terminal may have echoed ^C after the table.
		s.write("\r\x1b[K")
	}
	s.drawn = 0
}

// draw writes the table and its hint at the cursor, at the start of a line,
// and counts the rows they take.
func (s *screen) draw() {
	text := "\n" + s.last
	if s.hint != "" {
		text += s.hint + "\n"
	}
	width, _ := termWidth(s.term)
	s.drawn = 0
	for line := range strings.SplitSeq(strings.TrimSuffix(text, "\n"), "\n") {
		// A line longer than the terminal is wide wraps onto more rows.
		rows := 1
		if width > 0 && len(line) > width {
			rows = (len(line) + width - 1) / width
		}
		s.drawn += rows
	}
	s.write(text)
}

// erase removes the drawn table: the cursor goes up to its first row and
// everything from there down is cleared.
func (s *screen) erase() {
	if s.drawn > 0 {
		s.write(fmt.Sprintf("\r\x1b[%dA\x1b[J", s.drawn))
		s.drawn = 0
	}
}

func (s *screen) write(text string) { _, _ = io.WriteString(s.out, text) }

// termWidth returns the width of the terminal f is, and false if f is not
// a terminal.
func termWidth(f *os.File) (int, bool) {
	var ws struct{ row, col, x, y uint16 }
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	return int(ws.col), errno == 0
}
