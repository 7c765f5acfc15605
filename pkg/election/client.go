package election

import (
	"fmt"
	"net"
	"net/http"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// Clients are the REST clients the elector talks to the API server with: one
// for coordination.k8s.io/v1, one for the core group and one for
// discovery.k8s.io/v1, sharing one HTTP client. Their scheme holds only the types the elector reads and writes,
// which keeps the binary and its memory small.
type Clients struct {
	Coordination rest.Interface
	Core         rest.Interface
	// Discovery is discovery.k8s.io/v1, for -leader-service's EndpointSlice.
	Discovery rest.Interface
}

// scheme knows only what the elector uses.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	s.AddKnownTypes(coordinationv1.SchemeGroupVersion, &coordinationv1.Lease{})
	metav1.AddToGroupVersion(s, coordinationv1.SchemeGroupVersion)
	addCoreTypes(s)
	return s
}()

// NewClients builds the elector's clients from cfg. Every request but a watch
// carries a deadline from the elector's loop (a renewal's is the end of its
// renew deadline), so a hung API server cannot hold a request past the point
// where the answer still matters; dialTimeout bounds connecting as well.
func NewClients(cfg *rest.Config, dialTimeout time.Duration) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "k8s-elector"
	}
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.ContentType == "" {
		// Protobuf costs the API server less than JSON to decode, encode
		// and send to every watcher: at a handover every follower's write
		// and watch event lands on it at once, and the handover is as fast
		// as the API server answers them. JSON stays acceptable for
		// answers from anything that speaks only JSON.
		cfg.ContentType = runtime.ContentTypeProtobuf
		cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	// The warnings the API server sends (Endpoints is deprecated, say) are
	// the user's to act on once, not on every renewal.
	cfg.WarningHandler = rest.NoWarnings{}
	// Renewals must not queue behind a client-side rate limit: the elector's
	// own loop is its limit.
	cfg.QPS, cfg.Burst = -1, 0
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}

	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("build HTTP client: %w", err)
	}

	coordination, err := restClient(cfg, httpClient, coordinationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	// The core objects are declared in coreobjects.go, for JSON only.
	coreCfg := rest.CopyConfig(cfg)
	coreCfg.ContentType, coreCfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	core, err := restClient(coreCfg, httpClient, coreV1, "/api")
	if err != nil {
		return nil, err
	}
	discovery, err := restClient(coreCfg, httpClient, discoveryV1, "/apis")
	if err != nil {
		return nil, err
	}
	return &Clients{Coordination: coordination, Core: core, Discovery: discovery}, nil
}

func restClient(cfg *rest.Config, httpClient *http.Client, gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &gv
	c.APIPath = apiPath
	client, err := rest.RESTClientForConfigAndClient(c, httpClient)
	if err != nil {
		return nil, fmt.Errorf("build REST client for %s: %w", gv, err)
	}
	return client, nil
}
