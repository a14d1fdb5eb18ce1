package mls

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests (the oracle's included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
