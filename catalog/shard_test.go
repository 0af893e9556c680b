package catalog

import (
	"strings"
	"testing"
)

func TestShardConnString(t *testing.T) {
	t.Setenv("RESHARD_TEST_DSN", "host=h password=pw")
	t.Setenv("RESHARD_EMPTY_DSN", "")
	tests := []struct {
		sh      Shard
		want    string
		wantErr string
	}{
		{Shard{Name: "a", DSN: "host=h"}, "host=h", ""},
		{Shard{Name: "b", DSNEnv: "RESHARD_TEST_DSN"}, "host=h password=pw", ""},
		{Shard{Name: "c", DSNEnv: "RESHARD_EMPTY_DSN"}, "", "RESHARD_EMPTY_DSN is empty or unset"},
		{Shard{Name: "d"}, "", "neither dsn nor dsn_env"},
	}
	for _, tt := range tests {
		got, err := tt.sh.ConnString()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want %q", tt.sh.Name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %q, %v", tt.sh.Name, got, err)
		}
	}
	if d := (Shard{DSNEnv: "X"}).Display(); d != "$X" {
		t.Errorf("Display = %s", d)
	}
}
