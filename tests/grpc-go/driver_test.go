// The RuntimeDriver gRPC API driven by grpc-go, with a client generated from
// proto/runtime/v1/driver.proto (protoc-gen-go, protoc-gen-go-grpc), against a real
// `megavisor serve`: what a Go orchestrator sees, deadlines and cancellation included.
package grpcgo

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "megavisor.test/grpcgo/runtimev1"
)

// supervisor starts `megavisor serve` with a gRPC socket on the test bundle and returns a
// client of it; both go when the test ends.
func supervisor(t *testing.T, extra ...string) pb.RuntimeDriverClient {
	t.Helper()
	root := os.Getenv("MEGAVISOR_ROOT")
	megavisor := os.Getenv("MEGAVISOR")
	dir := t.TempDir()
	grpcSocket := filepath.Join(dir, "driver.grpc")
	args := append([]string{
		"serve", "--socket", filepath.Join(dir, "ring.sock"), "--grpc-socket", grpcSocket,
		"--bundle", filepath.Join(root, "build", "test-bundle"),
		"--trusted-key", filepath.Join(root, "build", "keys", "megavisor.pub"),
	}, extra...)
	cmd := exec.Command(megavisor, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(ready, "megavisor ready") {
		t.Fatalf("no readiness line: %q %v", ready, err)
	}
	conn, err := grpc.NewClient("unix://"+grpcSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewRuntimeDriverClient(conn)
}

func TestExecuteAndDiscover(t *testing.T) {
	client := supervisor(t)
	ctx := context.Background()
	reply, err := client.Execute(ctx, &pb.ExecuteRequest{Instruction: "args", Args: []string{"from go"}})
	if err != nil {
		t.Fatal(err)
	}
	if reply.ExitCode != 0 || string(reply.StdoutTail) != "args\nfrom go\n" {
		t.Fatalf("unexpected reply: %v", reply)
	}
	found, err := client.Discover(ctx, &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tool := range found.Tools {
		names[tool.Name] = true
	}
	if !names["spin"] || !names["sleep"] || !strings.HasPrefix(found.Version, "megavisor/") {
		t.Fatalf("unexpected discovery: %v", found)
	}
}

func TestErrorsAreStatusesWithTheKindInATrailer(t *testing.T) {
	client := supervisor(t)
	var trailer metadata.MD
	_, err := client.Execute(context.Background(), &pb.ExecuteRequest{Instruction: "rm"}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.NotFound {
		t.Fatalf("want NOT_FOUND, got %v", err)
	}
	if kind := trailer.Get("megavisor-error-kind"); len(kind) != 1 || kind[0] != "tool_not_found" {
		t.Fatalf("trailer: %v", trailer)
	}
}

// waitForTheSlot runs `true` until the one guest slot takes it, and returns how long that took.
func waitForTheSlot(t *testing.T, client pb.RuntimeDriverClient) time.Duration {
	t.Helper()
	started := time.Now()
	for {
		_, err := client.Execute(context.Background(), &pb.ExecuteRequest{Instruction: "true"})
		if err == nil {
			return time.Since(started)
		}
		if status.Code(err) != codes.ResourceExhausted || time.Since(started) > time.Second {
			t.Fatalf("the slot is still held after %v: %v", time.Since(started), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAMissedDeadlineIsDeadlineExceededEveryTimeAndFreesTheSlot(t *testing.T) {
	client := supervisor(t, "--max-concurrency", "1", "--queue-depth", "0")
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		started := time.Now()
		_, err := client.Execute(ctx, &pb.ExecuteRequest{Instruction: "spin"})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("attempt %d: want DEADLINE_EXCEEDED, got %v", i, err)
		}
		if elapsed := time.Since(started); elapsed > 500*time.Millisecond {
			t.Fatalf("attempt %d: answered after %v", i, elapsed)
		}
		if waited := waitForTheSlot(t, client); waited > 100*time.Millisecond {
			t.Fatalf("attempt %d: the spin held its slot %v past the deadline", i, waited)
		}
	}
}

func TestARetryWithLessTimeLeftRunsAgainThenReplays(t *testing.T) {
	client := supervisor(t, "--max-concurrency", "1", "--queue-depth", "0")
	request := &pb.ExecuteRequest{Instruction: "spin", Args: []string{"300"}, ExecutionId: "go-retry-1"}
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := client.Execute(short, request)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("want DEADLINE_EXCEEDED, got %v", err)
	}
	waitForTheSlot(t, client)
	long, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	reply, err := client.Execute(long, request)
	cancel()
	if err != nil || reply.Cached || string(reply.StdoutTail) != "spun\n" {
		t.Fatalf("the retry should run to its end: %v %v", reply, err)
	}
	hurried, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	again, err := client.Execute(hurried, request)
	cancel()
	if err != nil || !again.Cached {
		t.Fatalf("the last retry should replay: %v %v", again, err)
	}
}

func TestACancelledCallStopsItsTool(t *testing.T) {
	client := supervisor(t, "--max-concurrency", "1", "--queue-depth", "0")
	for _, request := range []*pb.ExecuteRequest{
		{Instruction: "spin"},
		{Instruction: "sleep", Args: []string{"60000"}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := client.Execute(ctx, request)
			done <- err
		}()
		time.Sleep(300 * time.Millisecond)
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Fatalf("%s: want CANCELLED, got %v", request.Instruction, err)
		}
		if waited := waitForTheSlot(t, client); waited > 200*time.Millisecond {
			t.Fatalf("%s: the cancelled call held its slot for %v", request.Instruction, waited)
		}
	}
}
