package cluster

import (
	"context"
	"fmt"
	"strconv"
)

// The cluster's audit log: every node appends the audit entries of the changes it
// makes to one Stream, <prefix>:{g}:audit, each sealed with the cluster key, so an
// admin's `audit` on any node shows the changes made on every node, newest first.

// auditMaxLen bounds the audit Stream (approximately), as the single node's store bounds
// its audit bucket.
const auditMaxLen = 10_000

// AppendAudit appends one audit entry (its JSON) to the cluster's audit log.
func (c *Ctl) AppendAudit(ctx context.Context, entry []byte) error {
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	k := c.keys.Audit()
	err := c.client.Do(ctx, c.client.B().Xadd().Key(k).Maxlen().Almost().Threshold(strconv.Itoa(auditMaxLen)).
		Id("*").FieldValue().FieldValue("e", string(c.sealer.Seal(k, entry))).Build()).Error()
	if err != nil {
		return fmt.Errorf("cluster: audit log: %w", err)
	}
	return nil
}

// ReadAudit returns the newest n audit entries, newest first. An entry written without
// the cluster key is left out and counted.
func (c *Ctl) ReadAudit(ctx context.Context, n int) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	k := c.keys.Audit()
	es, err := c.client.Do(ctx, c.client.B().Xrevrange().Key(k).End("+").Start("-").Count(int64(n)).Build()).AsXRange()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the audit log: %w", err)
	}
	out := make([][]byte, 0, len(es))
	for _, e := range es {
		env, err := c.sealer.Open(k, []byte(e.FieldValues["e"]))
		if err != nil {
			c.bad.Add(1)
			continue
		}
		out = append(out, env.Body)
	}
	return out, nil
}
