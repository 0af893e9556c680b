package planner

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/reshard/reshard/catalog"
)

// FormatVersion is the version of the plan file format.
const FormatVersion = 1

// Step kinds.
const (
	StepSplit = "split"
	StepMove  = "move"
)

// Plan is what `reshard plan` proposes and `reshard apply` executes. Loads are multiples of
// the mean load of an active shard (1.0 = exactly the mean). Byte and writes/s figures of
// ranges that do not exist yet (parts of a split) are estimates.
type Plan struct {
	Version int    `json:"version"`
	ID      string `json:"id"` // a hash of what the plan does and what it was made from
	Cluster string `json:"cluster"`
	// Revision is the catalog revision the plan was made from.
	Revision int64 `json:"revision"`
	// StatsRevision is the etcd revision the stats were read at (0 when unknown).
	StatsRevision int64   `json:"stats_revision,omitempty"`
	Options       Options `json:"options"`
	// Steps run in order: every split comes before the moves of its parts.
	Steps []Step `json:"steps"`
	// Ranges are the catalog ranges the steps touch, each with the mod revision it had when
	// the plan was made; apply refuses the plan if any of them changed since.
	Ranges []RangeRevision `json:"ranges"`
	Shards []ShardLoad     `json:"shards"`

	Moves       int     `json:"moves"`
	Splits      int     `json:"splits"`
	BytesToMove int64   `json:"bytes_to_move"`
	WritesMoved float64 `json:"writes_per_sec_moved"`
	// BytesFloor is an estimate of the bytes that must leave shards above the threshold
	// (and draining shards) for any plan, assuming a shard's bytes follow its load.
	BytesFloor    int64   `json:"bytes_floor"`
	MaxMeanBefore float64 `json:"max_mean_before"`
	MaxMeanAfter  float64 `json:"max_mean_after"`
	// LowerBound is the smallest max/mean any plan could reach: a single tenant cannot be
	// split, and ranges that are frozen or being migrated stay where they are.
	LowerBound float64 `json:"lower_bound"`
	// Balanced reports that every active shard was already within the threshold.
	Balanced bool     `json:"balanced"`
	Notes    []string `json:"notes,omitempty"`
}

// Step is one split or one move.
type Step struct {
	N     int              `json:"n"` // 1-based position
	Kind  string           `json:"kind"`
	Range catalog.KeyRange `json:"range"`
	// At are the split keys, ascending; Parts are the resulting ranges ([Lo,At[0]), ...).
	At    []int64            `json:"at,omitempty"`
	Parts []catalog.KeyRange `json:"parts,omitempty"`
	// Isolate is the tenant that a split gives its own one-key range.
	Isolate *int64 `json:"isolate,omitempty"`
	// IsolateTenant is that tenant's key as text when the stats know it (hash distribution).
	IsolateTenant string `json:"isolate_tenant,omitempty"`
	// From is the shard holding the range (for a split, where it happens); To the target of
	// a move.
	From         string  `json:"from"`
	To           string  `json:"to,omitempty"`
	Bytes        int64   `json:"bytes"`
	WritesPerSec float64 `json:"writes_per_sec"`
	Load         float64 `json:"load"`
	Drain        bool    `json:"drain,omitempty"`
	Reason       string  `json:"reason"`
}

// RangeRevision is a catalog range and the etcd mod revision it had when the plan was made.
// Key is the key the state recorded the revision under (catalog.RangeKey(lo), relative to
// the cluster prefix, for a state from the store); ModRevision 0 means the state carried no
// revision for it.
type RangeRevision struct {
	Range       catalog.KeyRange `json:"range"`
	Key         string           `json:"key"`
	ModRevision int64            `json:"mod_revision"`
}

// ShardLoad is a shard's load before and after the plan.
type ShardLoad struct {
	Shard             string  `json:"shard"`
	State             string  `json:"state"`
	Ranges            int     `json:"ranges"`
	RangesAfter       int     `json:"ranges_after"`
	Bytes             int64   `json:"bytes"`
	BytesAfter        int64   `json:"bytes_after"`
	WritesPerSec      float64 `json:"writes_per_sec"`
	WritesPerSecAfter float64 `json:"writes_per_sec_after"`
	Load              float64 `json:"load"`
	LoadAfter         float64 `json:"load_after"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 }

// MarshalIndent is the plan file's content.
func (p *Plan) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	return append(b, '\n'), nil
}

// ErrBadPlan wraps every reason a plan file cannot be used.
var ErrBadPlan = errors.New("bad plan file")

// Parse reads a plan file and checks that its steps are well formed.
func Parse(b []byte) (*Plan, error) {
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %v: write it with `reshard plan --out FILE`", ErrBadPlan, err)
	}
	if p.Version != FormatVersion {
		return nil, fmt.Errorf("%w: version %d, this reshard reads version %d: re-plan with this reshard", ErrBadPlan, p.Version, FormatVersion)
	}
	for i, s := range p.Steps {
		if s.N != i+1 {
			return nil, fmt.Errorf("%w: step %d is numbered %d: the file was edited; re-plan", ErrBadPlan, i+1, s.N)
		}
		switch s.Kind {
		case StepMove:
			if s.From == "" || s.To == "" || s.From == s.To {
				return nil, fmt.Errorf("%w: step %d moves %s from %q to %q: re-plan", ErrBadPlan, s.N, s.Range, s.From, s.To)
			}
		case StepSplit:
			if len(s.At) == 0 || len(s.Parts) != len(s.At)+1 {
				return nil, fmt.Errorf("%w: step %d splits %s at %v into %d parts: re-plan", ErrBadPlan, s.N, s.Range, s.At, len(s.Parts))
			}
			lo := s.Range
			for j, at := range s.At {
				l, r, err := lo.Split(at)
				if err != nil || !l.Equal(s.Parts[j]) {
					return nil, fmt.Errorf("%w: step %d: split of %s at %v does not give parts %v: re-plan", ErrBadPlan, s.N, s.Range, s.At, s.Parts)
				}
				lo = r
			}
			if !lo.Equal(s.Parts[len(s.Parts)-1]) {
				return nil, fmt.Errorf("%w: step %d: split of %s at %v does not give parts %v: re-plan", ErrBadPlan, s.N, s.Range, s.At, s.Parts)
			}
		default:
			return nil, fmt.Errorf("%w: step %d has kind %q (want split or move): re-plan", ErrBadPlan, s.N, s.Kind)
		}
	}
	return &p, nil
}

// planID hashes what the plan does and what it was made from, so the same input gives the
// same ID and apply can tell plans apart.
func planID(p *Plan) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n", p.Cluster, p.Revision)
	for _, rr := range p.Ranges {
		fmt.Fprintf(h, "%s %d\n", rr.Key, rr.ModRevision)
	}
	for _, s := range p.Steps {
		fmt.Fprintf(h, "%s %s %v %s %s\n", s.Kind, s.Range, s.At, s.From, s.To)
	}
	return "p" + hex.EncodeToString(h.Sum(nil))[:12]
}
