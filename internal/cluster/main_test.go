package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's run if a test leaves a goroutine behind (a feed, a
// Redis connection, a test server's waiter).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
