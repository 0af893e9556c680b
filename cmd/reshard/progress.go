package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/mover"
)

// newProgress returns a mover progress callback that draws a bar on a terminal (copy:
// bytes against the estimate, with rate and ETA; catch-up: lag) and nothing otherwise.
func newProgress(w io.Writer, id string) func(mover.Progress) {
	// JSON logs are read by a program: no bar between their lines.
	if !isTerminal(w) || logs.json {
		return nil
	}
	var (
		mu  sync.Mutex
		bar *progressbar.ProgressBar
	)
	return func(p mover.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			max := p.BytesTotal
			if max <= 0 {
				max = -1
			}
			bar = progressbar.NewOptions64(max,
				progressbar.OptionSetWriter(w),
				progressbar.OptionShowBytes(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(200*time.Millisecond),
				progressbar.OptionShowElapsedTimeOnFinish(),
				progressbar.OptionClearOnFinish(),
			)
		}
		if p.BytesTotal > 0 && p.BytesTotal > p.BytesCopied {
			bar.ChangeMax64(p.BytesTotal)
		}
		switch p.Phase {
		case "copying":
			bar.Describe(fmt.Sprintf("%s copy %d/%d chunks, %d rows", id, p.ChunksDone, p.ChunksTotal, p.RowsCopied))
			_ = bar.Set64(p.BytesCopied)
		default:
			bar.Describe(fmt.Sprintf("%s catch-up: %d txs applied, lag %s / %.1fs", id, p.AppliedTxs, bytesize.Format(p.LagBytes), p.LagSeconds))
		}
	}
}
