package integration

import (
	"os"
	"testing"

	"github.com/reshard/reshard/internal/pgcluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgcluster.RemoveTemplate()
	os.Exit(code)
}
