package main

import (
	"github.com/spf13/cobra"

	"github.com/reshard/reshard/internal/metrics"
	"github.com/reshard/reshard/mover"
)

// metricsFlag is --metrics ADDR of the long-running commands (docs/metrics.md).
type metricsFlag struct {
	addr string
	// m is what the command reports to; nil (reporting nothing) without --metrics.
	m *metrics.Metrics
}

func (f *metricsFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics while the command runs (e.g. :9187)")
}

// serve starts serving the metrics when --metrics is given, before the command does
// anything, so a busy address is refused with nothing changed; stop ends it.
func (f *metricsFlag) serve(cmd *cobra.Command) (stop func(), err error) {
	if f.addr == "" {
		return func() {}, nil
	}
	f.m = metrics.New()
	addr, stop, err := f.m.Serve(cmd.Context(), f.addr)
	if err != nil {
		return nil, err
	}
	cmdLogger().Info("serving metrics", "url", "http://"+addr.String()+"/metrics")
	return stop, nil
}

// withMetrics reports each progress of a mover to m as well as to p (either may be nil).
func withMetrics(p func(mover.Progress), m *metrics.Metrics) func(mover.Progress) {
	if m == nil {
		return p
	}
	return func(pr mover.Progress) {
		m.Progress(pr)
		if p != nil {
			p(pr)
		}
	}
}
