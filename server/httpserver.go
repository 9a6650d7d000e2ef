package server

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Bounds of the public HTTP server: every connection has a read deadline
// and every request's header block a size limit (the api package bounds
// bodies and query values).
const (
	// httpReadHeaderTimeout bounds reading a request's line and headers.
	httpReadHeaderTimeout = 10 * time.Second
	// httpReadTimeout bounds reading a whole request, body included, so a
	// client trickling a body cannot hold a handler. It does not end SSE
	// streams: net/http lifts the deadline once a request is read
	// (api.TestStreamOutlivesTheServerReadTimeout).
	httpReadTimeout = 30 * time.Second
	// httpIdleTimeout closes kept-alive connections idle this long.
	httpIdleTimeout = 120 * time.Second
	// httpMaxHeaderBytes bounds the request line and headers together.
	// The largest legitimate request is a subscribe to 500 channels of
	// 256-byte names, URL-encoded (up to three bytes a byte), with a
	// cursor and a token: about 400 KiB. Beyond it net/http answers 431.
	httpMaxHeaderBytes = 512 << 10
)

// newHTTPServer configures the public API's server; with HTTPS it serves
// the current certificate of s.httpTLS (see ReloadTLS).
func (s *Server) newHTTPServer() *http.Server {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.httpTLS != nil {
		srv.TLSConfig = &tls.Config{
			// Browsers and HTTP clients of the last decade speak 1.2.
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.httpTLS.GetCertificate,
		}
	}
	return srv
}

// reloadHTTPTLS reads the certificate files of the public API again: new
// connections get the new certificate, open ones keep theirs. When the
// files do not load, the previous certificate stays in use and the error
// is returned. Without HTTPS it does nothing.
func (s *Server) reloadHTTPTLS() error {
	if s.httpTLS == nil {
		return nil
	}
	if err := s.httpTLS.Reload(); err != nil {
		s.log.Error("public API certificate not reloaded; the previous one stays in use", "err", err)
		return err
	}
	leaf := s.httpTLS.Certificate().Leaf
	s.log.Info("public API certificate reloaded", "subject", leaf.Subject.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
