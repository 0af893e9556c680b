package metricstest

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse reads an exposition with Prometheus's own text parser; one that does not parse
// fails the test, since no scraper could read it either.
func Parse(t testing.TB, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// Value is the value of family name's series whose labels include want, and whether there
// is one (a histogram's value is its count of observations).
func Value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.Metric {
		if !hasLabels(s, want) {
			continue
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func hasLabels(s *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range s.Label {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// Series is one series a test expects: its family, labels it includes, and value.
type Series struct {
	Name   string
	Labels map[string]string
	Want   float64
}

// Expect reports, as test errors, each of want that fams lacks or holds another value of.
func Expect(t testing.TB, fams map[string]*dto.MetricFamily, want []Series) {
	t.Helper()
	for _, c := range want {
		if got, ok := Value(fams, c.Name, c.Labels); !ok || got != c.Want {
			t.Errorf("metrics: %s%v = %v (present %v), want %v", c.Name, c.Labels, got, ok, c.Want)
		}
	}
}
