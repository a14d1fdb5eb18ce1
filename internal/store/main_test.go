package store

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every Writer a test
// starts must be closed, every store's background work finished.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
