package clock

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		d    time.Duration
		want error
	}{
		{"waits out d", context.Background(), time.Millisecond, nil},
		{"a done context ends it with its error", done, time.Hour, context.Canceled},
	} {
		if err := Sleep(tc.ctx, tc.d); !errors.Is(err, tc.want) {
			t.Errorf("%s: Sleep = %v, want %v", tc.name, err, tc.want)
		}
	}
}
