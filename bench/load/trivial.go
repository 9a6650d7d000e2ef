package load

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"
)

// TrivialServer is the baseline: an in-process net/http server whose every
// POST reads a small JSON body and answers {"ok":true}. Driving it with the
// same client code shows what the client, the loopback network and net/http
// alone cost on this machine.
type TrivialServer struct {
	// URL is the server's base URL.
	URL string
	srv *http.Server
	ln  net.Listener
}

// StartTrivial serves the baseline handler on a free 127.0.0.1 port.
func StartTrivial() (*TrivialServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(TrivialHandler), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &TrivialServer{URL: "http://" + ln.Addr().String(), srv: srv, ln: ln}, nil
}

// TrivialHandler is the baseline's handler: a POST's body (at most 64 KiB)
// is decoded as a JSON object and answered {"ok":true}; anything else gets a
// JSON error. It checks no token and keeps no state: it is what net/http and
// decoding the body cost, the floor any presence server sits on.
func TrivialHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, `{"errors":["POST only"]}`, http.StatusMethodNotAllowed)
		return
	}
	var body map[string]json.RawMessage
	data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(data, &body)
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"errors":["bad json"]}`))
		return
	}
	_, _ = w.Write([]byte(`{"ok":true}`))
}

// Close stops the server.
func (s *TrivialServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return s.srv.Close()
	}
	return nil
}
