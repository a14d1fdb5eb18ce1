package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine of the load generator outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
