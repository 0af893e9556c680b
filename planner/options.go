package planner

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Strategy says what "load" means when shards are compared.
type Strategy string

// Strategies. Balanced averages each range's share of the fleet's bytes and its share of the
// fleet's writes/s, so neither unit dominates because of its scale.
const (
	StrategySize     Strategy = "size"
	StrategyWrites   Strategy = "writes"
	StrategyBalanced Strategy = "balanced"
)

// ParseStrategy reads a --strategy value; the empty string is balanced.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(strings.ToLower(strings.TrimSpace(s))) {
	case "", StrategyBalanced:
		return StrategyBalanced, nil
	case StrategySize:
		return StrategySize, nil
	case StrategyWrites:
		return StrategyWrites, nil
	}
	return "", fmt.Errorf("%w: strategy %q: use size, writes or balanced", ErrOptions, s)
}

// ErrOptions wraps every invalid option.
var ErrOptions = errors.New("invalid planner options")

// Options tune a plan. Start from DefaultOptions: the zero value means "no threshold", "no
// hot-key isolation". Loads below are multiples of the mean load of an active shard.
type Options struct {
	// Strategy: size, writes or balanced (the default when empty).
	Strategy Strategy `json:"strategy"`
	// Threshold: a shard is balanced when its load is within this fraction of the mean
	// (0.1 = within 10%). Only shards outside it make the planner act.
	Threshold float64 `json:"threshold"`
	// ImprovementThreshold: a move must lower the larger load of its two shards by at least
	// this fraction of the moved range's own load; it keeps moves that mostly shift the
	// problem from one shard to the other out of the plan.
	ImprovementThreshold float64 `json:"improvement_threshold"`
	// MaxMoves caps the number of moves (0: no cap). Splits are not counted: they move no data.
	MaxMoves int `json:"max_moves,omitempty"`
	// MaxBytes caps the estimated bytes moved (0: no cap).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// IsolateHotKeys lets a split give a hot tenant its own one-key range.
	IsolateHotKeys bool `json:"isolate_hot_keys"`
	// HotKeyLoad: a tenant carrying at least this much load (or half of its range's) is
	// isolated, rather than its range cut at the median, when its range must be split.
	// 0 means 0.25.
	HotKeyLoad float64 `json:"hot_key_load"`
	// MaxRangeLoad: a range carrying more than this is split before anything moves.
	// 0 means 1 (the mean: a range that alone exceeds what one shard should carry).
	MaxRangeLoad float64 `json:"max_range_load"`
}

// DefaultOptions are the settings `reshard plan` uses when no flag is given.
func DefaultOptions() Options {
	return Options{
		Strategy:             StrategyBalanced,
		Threshold:            0.1,
		ImprovementThreshold: 0.1,
		IsolateHotKeys:       true,
		HotKeyLoad:           0.25,
		MaxRangeLoad:         1,
	}
}

// normalized fills the "0 means default" fields.
func (o Options) normalized() Options {
	if o.Strategy == "" {
		o.Strategy = StrategyBalanced
	}
	if o.HotKeyLoad == 0 {
		o.HotKeyLoad = 0.25
	}
	if o.MaxRangeLoad == 0 {
		o.MaxRangeLoad = 1
	}
	return o
}

// Validate reports every bad option in one error, each with the value range to use.
func (o Options) Validate() error {
	var p []string
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	if _, err := ParseStrategy(string(o.Strategy)); err != nil {
		p = append(p, fmt.Sprintf("strategy %q: use size, writes or balanced", o.Strategy))
	}
	if bad(o.Threshold) || o.Threshold < 0 || o.Threshold >= 1 {
		p = append(p, fmt.Sprintf("threshold %v: use a fraction of the mean in [0, 1), e.g. 0.1 for within 10%%", o.Threshold))
	}
	if bad(o.ImprovementThreshold) || o.ImprovementThreshold < 0 || o.ImprovementThreshold > 1 {
		p = append(p, fmt.Sprintf("improvement threshold %v: use a fraction of the moved range's load in [0, 1], e.g. 0.1", o.ImprovementThreshold))
	}
	if o.MaxMoves < 0 {
		p = append(p, fmt.Sprintf("max moves %d: use 0 (no cap) or a positive count", o.MaxMoves))
	}
	if o.MaxBytes < 0 {
		p = append(p, fmt.Sprintf("max bytes %d: use 0 (no cap) or a positive size", o.MaxBytes))
	}
	if bad(o.HotKeyLoad) || o.HotKeyLoad < 0 || o.HotKeyLoad > 100 {
		p = append(p, fmt.Sprintf("hot key load %v: use a multiple of the mean in (0, 100], e.g. 0.25", o.HotKeyLoad))
	}
	if bad(o.MaxRangeLoad) || o.MaxRangeLoad < 0 || (o.MaxRangeLoad > 0 && o.MaxRangeLoad < 0.01) || o.MaxRangeLoad > 100 {
		p = append(p, fmt.Sprintf("max range load %v: use a multiple of the mean in [0.01, 100], e.g. 1", o.MaxRangeLoad))
	}
	switch len(p) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: %s", ErrOptions, p[0])
	}
	return fmt.Errorf("%w:\n  - %s", ErrOptions, strings.Join(p, "\n  - "))
}
