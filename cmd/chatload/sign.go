package main

// -sign: every sender is a device of its own user and signs every say, so a run
// measures what the server's signature check costs (issue 12, threat vi). Each
// sender makes an Ed25519 user root key (URK) and device identity key (DIK) with
// crypto/ed25519, registers the device with register_device exactly as PROTOCOL.md
// ("Key directory") says, and then sends each say with a `sig` over the signed bytes
// of internal/sigmsg. Only senders register: a client that never sends needs no key
// for the server, and the recipients' cost of a signed message (a longer line) is
// there either way. (Every client makes its keys at connect time, since which
// clients send is known only once all are connected.)

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"modified-chat/internal/sigmsg"
)

// Registration limits and names.
const (
	// registerTimeout bounds the wait for a register_device's ack.
	registerTimeout = 15 * time.Second
	// registerRef is the ref of the registration, so its ack is told from others.
	registerRef = "chatload-register"
	// devUserPrefix is how the development login names a user id: "dev:" + name.
	devUserPrefix = "dev:"
)

// signer is one sender's device: its keys, the next counter, and the registration's
// outcome, which the read loop reports (it alone reads the socket).
type signer struct {
	user    string
	device  string
	urk     ed25519.PrivateKey
	dik     ed25519.PrivateKey
	created uint64
	counter uint64         // send loop only
	answer  chan string    // the registration's outcome: "" for its ack, else the error code
	waiting bool           // read loop only: the registration is not answered yet
	msg     sigmsg.Message // send loop only: reused for every say
}

// newSigner makes a fresh device for user: new keys, a random device id.
func newSigner(user string) (*signer, error) {
	_, urk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	_, dik, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	return &signer{
		user: user, device: base64.RawURLEncoding.EncodeToString(id[:]), urk: urk, dik: dik,
		created: uint64(time.Now().UnixMilli()), answer: make(chan string, 1), waiting: true,
	}, nil
}

// registration is the register_device frame: the URK certifies the DIK for this
// user, device id and creation time (sigmsg.DeviceCert).
func (s *signer) registration() ([]byte, error) {
	cert := sigmsg.DeviceCert{User: s.user, Device: s.device, Created: s.created}
	copy(cert.DIK[:], s.dik.Public().(ed25519.PublicKey))
	return json.Marshal(map[string]any{
		"type": "register_device", "ref": registerRef,
		"urk":     base64.StdEncoding.EncodeToString(s.urk.Public().(ed25519.PublicKey)),
		"device":  s.device,
		"dik":     base64.StdEncoding.EncodeToString(cert.DIK[:]),
		"created": s.created,
		"cert":    base64.StdEncoding.EncodeToString(ed25519.Sign(s.urk, cert.Encode())),
	})
}

// appendSay appends a say of text in room signed by this device with the next
// counter, a random message id and the current time. room and text must need no JSON
// escaping (a checked room name, a load payload) and pass the server's cleaning
// unchanged, which a load payload does.
func (s *signer) appendSay(dst []byte, room string, text []byte) []byte {
	s.counter++
	m := &s.msg
	*m = sigmsg.Message{Kind: "say", Room: room, User: s.user, Device: s.device, Counter: s.counter,
		TS: uint64(time.Now().UnixMilli()), Text: string(text)}
	_, _ = rand.Read(m.ID[:])
	sig := ed25519.Sign(s.dik, m.Encode())
	dst = append(dst, `{"type":"say","room":"`...)
	dst = append(dst, room...)
	dst = append(dst, `","text":"`...)
	dst = append(dst, text...)
	dst = append(dst, `","sig":{"device":"`...)
	dst = append(dst, s.device...)
	dst = append(dst, `","counter":`...)
	dst = strconv.AppendUint(dst, m.Counter, 10)
	dst = append(dst, `,"msg_id":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, m.ID[:])
	dst = append(dst, `","ts":`...)
	dst = strconv.AppendUint(dst, m.TS, 10)
	dst = append(dst, `,"signature":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, sig)
	return append(dst, `"}}`...)
}

// signAck is the read loop's hook for an `ack`: the first one a signer waits for is
// its registration's (a load say carries no ref, so it gets none).
func (c *loadConn) signAck() {
	if s := c.sig; s != nil && s.waiting {
		s.waiting = false
		s.answer <- ""
	}
}

// signRefused is the read loop's hook for an `error` while the registration waits:
// the server refused it (or the connection's first command), with this code.
func (c *loadConn) signRefused(code string) {
	if s := c.sig; s != nil && s.waiting {
		s.waiting = false
		s.answer <- code
	}
}

// registerSenders gives every sender a device and waits until the server has
// acknowledged each registration; the first refusal or timeout fails the run, since
// a signed run with unsigned senders would measure nothing.
func (r *runner) registerSenders(ctx context.Context, senders []*loadConn) error {
	errs := make([]error, len(senders))
	var wg sync.WaitGroup
	for i, c := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.register(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("-sign: %w", err)
	}
	r.logf("registered %d signing devices", len(senders))
	return nil
}

// register sends this connection's register_device and waits for the answer the
// read loop hands over. c.sig is set before the frame leaves, so the read loop sees
// it for the answer (the channel send and receive order the two goroutines).
func (c *loadConn) register(ctx context.Context) error {
	s := c.sig
	frame, err := s.registration()
	if err != nil {
		return err
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return fmt.Errorf("%s: register_device: %s", s.user, classifyErr(err))
	}
	t := time.NewTimer(registerTimeout)
	defer t.Stop()
	select {
	case code := <-s.answer:
		if code != "" {
			return fmt.Errorf("%s: register_device refused: %s", s.user, code)
		}
		return nil
	case <-c.done:
		return fmt.Errorf("%s: register_device: connection ended (%s)", s.user, closeReason(c.endErr))
	case <-t.C:
		return fmt.Errorf("%s: register_device: no answer in %s", s.user, registerTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// validateSign checks -sign against the rest of the configuration: the signed user
// id is the development login's, so a shared -cookie (one user for every client, id
// unknown here) cannot sign, and the original protocol has no signatures.
func (c *Config) validateSign() []string {
	if !c.Sign {
		return nil
	}
	var errs []string
	if c.Proto != protoModified {
		errs = append(errs, "-sign needs -proto modified")
	}
	if c.Cookie != "" {
		errs = append(errs, "-sign needs the development login (no -cookie): each sender is its own user")
	}
	if c.Idle {
		errs = append(errs, "-sign signs says: not with -idle")
	}
	return errs
}
