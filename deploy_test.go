package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxExposure is the highest `systemd-analyze security` exposure the unit may have
// (0 is locked down, 10 is fully exposed; systemd calls up to 2.0 "OK").
const maxExposure = 2.0

// exposureLine is systemd-analyze's verdict line.
var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestSystemdUnit: deploy/modified-chat.service passes `systemd-analyze verify` and is
// rated at most 2.0 by `systemd-analyze security`, alone and with the low-ports drop-in,
// and keeps the hardening the README promises.
func TestSystemdUnit(t *testing.T) {
	analyze := needProgram(t, "systemd-analyze")
	unit, err := os.ReadFile("deploy/modified-chat.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("deploy/low-ports.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"DynamicUser=yes", "StateDirectory=modified-chat", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
		"\nCapabilityBoundingSet=\n", "\nAmbientCapabilities=\n", "KillSignal=SIGTERM",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lost %q", strings.TrimSpace(want))
		}
	}
	// verify checks that the program exists; any executable stands in for the
	// installed binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := strings.ReplaceAll(string(unit), "/usr/local/bin/modified-chat", self)
	variants := map[string]string{
		"modified-chat.service":           plain,
		"modified-chat-low-ports.service": plain + "\n" + string(dropIn),
	}
	for name, text := range variants {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
		out, err = exec.Command(analyze, "security", "--offline=true", path).CombinedOutput()
		m := exposureLine.FindSubmatch(out)
		if m == nil {
			// Old systemd without offline analysis: it cannot judge a unit file here.
			t.Skipf("systemd-analyze security cannot run here: %v\n%s", err, out)
		}
		exposure, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", name, exposure)
		if exposure > maxExposure {
			t.Errorf("%s: exposure %.1f, want at most %.1f\n%s", name, exposure, maxExposure, out)
		}
	}
}

// TestContainerImage builds the FROM scratch image with `make image`, starts it with
// podman and reaches /healthz through the published port; it also checks that the
// image runs as the unprivileged user with its data in a volume. Where podman cannot
// run a container at all (no usable OCI runtime, as inside some sandboxes), it says
// why and skips before building anything.
func TestContainerImage(t *testing.T) {
	podman := needProgram(t, "podman")
	needProgram(t, "make")
	if out, err := exec.Command(podman, "run", "--rm", "--rootfs", "/", "/bin/true").CombinedOutput(); err != nil {
		t.Skipf("podman cannot run a container here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	image := "localhost/modified-chat:suite-test"
	if out, err := runOutput("make", "-s", "image", "IMAGE="+image); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", image).Run() })
	out, err := exec.Command(podman, "image", "inspect", image, "--format", "{{.Config.User}} {{.Config.Volumes}}").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "65532:65532") || !strings.Contains(string(out), "/data") {
		t.Fatalf("image config: %v %s; want user 65532:65532 and a /data volume", err, out)
	}

	port := freePort(t)
	name := "modified-chat-suite-" + port
	// The development login must be forced: inside the container it listens beyond
	// loopback, which it otherwise refuses.
	out, err = exec.Command(podman, "run", "-d", "--rm", "--name", name, "-p", "127.0.0.1:"+port+":8080",
		image, "-dev-login-anywhere").CombinedOutput()
	if err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command(podman, "logs", name).CombinedOutput()
			t.Logf("container log:\n%s", logs)
		}
		exec.Command(podman, "rm", "-f", "-t", "2", name).Run()
	})
	client := &http.Client{Timeout: 2 * time.Second}
	waitFor(t, "/healthz in the container", func() bool {
		resp, err := client.Get("http://127.0.0.1:" + port + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The built-in backup works inside the image, which has no shell and no curl.
	if out, err := exec.Command(podman, "exec", name, "/modified-chat", "backup", "/data/backup.db").CombinedOutput(); err != nil {
		t.Fatalf("backup inside the container: %v\n%s", err, out)
	}
}

// TestVersion: -version is a flag like the others, and what it prints names the
// version and the module's build information.
func TestVersion(t *testing.T) {
	cfg, err := parseConfig([]string{"-version"}, func(string) string { return "" })
	if err != nil || !cfg.Version {
		t.Fatalf("-version: %v, %+v", err, cfg.Version)
	}
	var b strings.Builder
	printVersion(&b)
	out := b.String()
	if !strings.HasPrefix(out, "modified-chat "+version+"\n") || !strings.Contains(out, "\ngo\tgo1.") || !strings.Contains(out, "github.com/gorilla/websocket") {
		t.Fatalf("-version printed:\n%s", out)
	}
}

// TestReadmeCarriesNginxConf: the README's nginx configuration is the file the nginx
// test runs, verbatim from its first directive's comment on (the file's header comment
// is what the README says in prose).
func TestReadmeCarriesNginxConf(t *testing.T) {
	conf, err := os.ReadFile("deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	header := strings.Index(string(conf), "\n\n")
	if header < 0 {
		t.Fatal("deploy/nginx.conf has no header comment")
	}
	body := string(conf[header+2:])
	if !strings.Contains(string(readme), "```nginx\n"+body+"```") {
		t.Error("README's nginx configuration differs from deploy/nginx.conf; copy the file into it")
	}
}
