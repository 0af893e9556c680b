package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the registry in Prometheus's text format (or what the scraper asks for).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Serve listens on addr (host:port; port 0 picks one) and serves /metrics until ctx ends
// or stop is called. A bad or busy address is an error before anything is served, so a
// command can refuse it before it starts work.
func (m *Metrics) Serve(ctx context.Context, addr string) (bound net.Addr, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics %s: %w (pick another address, such as :9187)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// It returns ErrServerClosed once stopped; any other error leaves the command
		// running without metrics, which is no reason to stop a move.
		_ = srv.Serve(ln)
	}()
	sctx, cancel := context.WithCancel(ctx)
	go func() {
		<-sctx.Done()
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer ccancel()
		_ = srv.Shutdown(cctx)
	}()
	return ln.Addr(), func() { cancel(); <-done }, nil
}
