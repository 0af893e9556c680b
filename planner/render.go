package planner

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/reshard/reshard/internal/bytesize"
)

// shardsShownInFull is how many shards the text lists before it keeps to those that change.
const shardsShownInFull = 40

// WriteText renders the plan for people: the steps with their reasons, each shard's load
// before and after with a bar, and the totals.
func (p *Plan) WriteText(out io.Writer) error {
	var b strings.Builder
	cluster := p.Cluster
	if cluster == "" {
		cluster = "(unnamed)"
	}
	fmt.Fprintf(&b, "Plan %s for cluster %s at catalog revision %d (strategy %s, threshold %s)\n\n",
		p.ID, cluster, p.Revision, p.Options.Strategy, pct(p.Options.Threshold))

	if p.Empty() {
		switch {
		case p.Balanced && p.MaxMeanBefore == 0:
			fmt.Fprintf(&b, "nothing to do: there is no load to balance and no shard is draining\n")
		case p.Balanced:
			fmt.Fprintf(&b, "nothing to do: every shard is within %s of the mean (max/mean %.2f)\n", pct(p.Options.Threshold), p.MaxMeanBefore)
		default:
			fmt.Fprintf(&b, "nothing to do that improves the balance: max/mean stays %.2f (lower bound %.2f); see the notes below\n", p.MaxMeanBefore, p.LowerBound)
		}
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STEP\tKIND\tRANGE\tFROM\tTO\tBYTES\tLOAD\tWHY")
		for _, s := range p.Steps {
			rng := s.Range.String()
			to := s.To
			if s.Kind == StepSplit {
				at := make([]string, len(s.At))
				for i, x := range s.At {
					at[i] = fmt.Sprint(x)
				}
				rng += " at " + strings.Join(at, ",")
				to = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", s.N, s.Kind, rng, s.From, to, bytesize.Format(s.Bytes), s.Load, s.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTATE\tRANGES\tBYTES\tWRITES/S\tLOAD BEFORE\t\tLOAD AFTER\t")
	hidden := 0
	for _, s := range p.Shards {
		changed := s.Load != s.LoadAfter || s.Ranges != s.RangesAfter
		outside := s.State != "draining" && math.Abs(s.LoadAfter-1) > p.Options.Threshold+1e-9
		if len(p.Shards) > shardsShownInFull && !changed && !outside {
			hidden++
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%.2f\t%s\n", s.Shard, s.State,
			arrow(fmt.Sprint(s.Ranges), fmt.Sprint(s.RangesAfter)),
			arrow(bytesize.Format(s.Bytes), bytesize.Format(s.BytesAfter)),
			arrow(fmt.Sprintf("%.1f", s.WritesPerSec), fmt.Sprintf("%.1f", s.WritesPerSecAfter)),
			s.Load, bar(s.Load), s.LoadAfter, bar(s.LoadAfter))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if hidden > 0 {
		fmt.Fprintf(&b, "(%d more shards within %s of the mean, unchanged)\n", hidden, pct(p.Options.Threshold))
	}
	fmt.Fprintf(&b, "load is a multiple of the mean of an active shard; the bar's | marks the mean\n\n")

	fmt.Fprintf(&b, "%d move(s), %d split(s), %s to move (at least %s must move to reach the threshold)\n",
		p.Moves, p.Splits, bytesize.Format(p.BytesToMove), bytesize.Format(p.BytesFloor))
	fmt.Fprintf(&b, "max/mean %.2f -> %.2f; lower bound %.2f\n", p.MaxMeanBefore, p.MaxMeanAfter, p.LowerBound)
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// Text is WriteText into a string.
func (p *Plan) Text() string {
	var b strings.Builder
	_ = p.WriteText(&b)
	return b.String()
}

func arrow(a, b string) string {
	if a == b {
		return a
	}
	return a + " -> " + b
}

func pct(f float64) string { return fmt.Sprintf("%g%%", math.Round(f*1000)/10) }

// bar draws load on a scale of 0..2x the mean, 10 cells per mean, with '|' at the mean.
func bar(load float64) string {
	const perMean, cells = 10, 20
	n := int(math.Round(load * perMean))
	var b strings.Builder
	for i := 0; i < cells; i++ {
		if i == perMean {
			b.WriteByte('|')
		}
		if i < n {
			b.WriteByte('#')
		} else {
			b.WriteByte('.')
		}
	}
	if n > cells {
		b.WriteByte('+')
	}
	return b.String()
}
