package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics"
	"github.com/reshard/reshard/migrate"
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

// observers tells each of m and bars (either may be nil) what the executor does.
func observers(m *metrics.Metrics, bars *progressBars) migrate.Observer {
	var obs multiObserver
	if m != nil {
		obs = append(obs, m)
	}
	if bars != nil {
		obs = append(obs, bars)
	}
	return obs
}

type multiObserver []migrate.Observer

func (o multiObserver) Migration(m *catalog.Migration) {
	for _, x := range o {
		x.Migration(m)
	}
}

func (o multiObserver) CutOver(m *catalog.Migration) {
	for _, x := range o {
		x.CutOver(m)
	}
}

func (o multiObserver) Failed(m *catalog.Migration) {
	for _, x := range o {
		x.Failed(m)
	}
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

// run is the body of a long-running command: fn runs with the command's context while the
// metrics are served (with --metrics), and the serving ends when fn returns.
func (f *metricsFlag) run(cmd *cobra.Command, fn func(ctx context.Context) error) error {
	stop, err := f.serve(cmd)
	if err != nil {
		return err
	}
	defer stop()
	return fn(cmd.Context())
}
