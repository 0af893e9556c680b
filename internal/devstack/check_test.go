package devstack

import (
	"context"
	"strings"
	"testing"
)

// TestCheckNeedsAFingerprint: a check without a fingerprint says to take one first.
func TestCheckNeedsAFingerprint(t *testing.T) {
	dir := readyStack(t)
	res, err := Check(context.Background(), dir)
	if res != nil || err == nil || !strings.Contains(err.Error(), "no fingerprint in "+dir+": run `reshard dev check --save`") {
		t.Errorf("Check = %v, %v", res, err)
	}
}
