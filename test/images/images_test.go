// Package images checks the images' binaries without a container engine: it
// runs the go build command from each Dockerfile, exactly as written, for
// every target platform, and checks that the result is static and reports
// the version it was stamped with.
package images

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestDockerfileBuilds(t *testing.T) {
	for _, bin := range []string{"elector", "injector"} {
		command := buildCommand(t, "../../Dockerfile."+bin)
		for _, arch := range []string{"amd64", "arm64"} {
			t.Run(bin+"/"+arch, func(t *testing.T) {
				out := t.TempDir()
				sh := strings.NewReplacer("$TARGETOS", "linux", "$TARGETARCH", arch, "$VERSION", "v9.9.9-test", "/out/", out+"/").Replace(command)
				cmd := exec.Command("sh", "-c", sh)
				cmd.Dir = "../.."
				if b, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", sh, err, b)
				}
				path := filepath.Join(out, bin)
				checkStatic(t, path, arch)
				if arch == runtime.GOARCH {
					version, err := exec.Command(path, "-version").CombinedOutput()
					if err != nil || !bytes.Contains(version, []byte("v9.9.9-test")) {
						t.Errorf("%s -version = %q, %v; want the stamped v9.9.9-test", bin, version, err)
					}
				}
			})
		}
	}
}

// buildCommand returns the Dockerfile's RUN instruction that runs go build,
// with its line continuations joined.
func buildCommand(t *testing.T, dockerfile string) string {
	t.Helper()
	raw, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	for line := range strings.SplitSeq(text, "\n") {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "RUN "); ok && strings.Contains(cmd, "go build") {
			for _, flag := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=$VERSION", "GOARCH=$TARGETARCH"} {
				if !strings.Contains(cmd, flag) {
					t.Errorf("%s: the go build command lacks %s", dockerfile, flag)
				}
			}
			return cmd
		}
	}
	t.Fatalf("%s has no RUN ... go build", dockerfile)
	return ""
}

// checkStatic fails unless path is an ELF for arch with no interpreter and
// no shared libraries: it runs on distroless/static.
func checkStatic(t *testing.T, path, arch string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != want {
		t.Errorf("machine = %s, want %s", f.Machine, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links shared libraries %v: not static", path, libs)
	}
}
