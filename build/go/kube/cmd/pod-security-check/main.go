// Command pod-security-check runs the upstream Pod Security Standards checks (the very code
// the API server's PodSecurity admission runs, k8s.io/pod-security-admission),
// for vnest's syncer over stdin/stdout, one JSON object a line:
//
//	in:  {"id": 1, "level": "baseline", "pod": {<a v1 Pod>}}
//	out: {"id": 1, "allowed": false, "message": "violates PodSecurity \"baseline:latest\": ..."}
//
// The syncer checks every pod before it reaches the host, where a tenant's
// namespace labels cannot switch the check off. Running upstream's code rather
// than a port keeps the rules (and their messages) exactly Kubernetes' own. It is
// built in the kube module, so it shares the pinned dependency graph and the
// compiled packages of the API server.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

type checkRequest struct {
	ID    int64           `json:"id"`
	Level string          `json:"level"`
	Pod   json.RawMessage `json:"pod"`
}

type checkResponse struct {
	ID      int64  `json:"id"`
	Allowed bool   `json:"allowed"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	os.Exit(run())
}

func run() int {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pod-security-check: %v\n", err)
		return 1
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20) // a pod is at most the API server's 3 MiB request
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	for in.Scan() {
		var req checkRequest
		resp := checkResponse{}
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			resp.Error = fmt.Sprintf("bad request: %v", err)
		} else {
			resp.ID = req.ID
			resp.Allowed, resp.Message, err = evaluate(evaluator, req)
			if err != nil {
				resp.Error = err.Error()
			}
		}
		if err := encoder.Encode(&resp); err != nil {
			return 1
		}
		if err := out.Flush(); err != nil {
			return 1
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "pod-security-check: %v\n", err)
		return 1
	}
	return 0
}

func evaluate(evaluator policy.Evaluator, req checkRequest) (bool, string, error) {
	level, err := psapi.ParseLevel(req.Level)
	if err != nil {
		return false, "", err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Pod, &pod); err != nil {
		return false, "", fmt.Errorf("bad pod: %v", err)
	}
	lv := psapi.LevelVersion{Level: level, Version: psapi.LatestVersion()}
	result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, &pod.ObjectMeta, &pod.Spec))
	if result.Allowed {
		return true, "", nil
	}
	// The PodSecurity admission's own wording (k8s.io/pod-security-admission/admission).
	return false, fmt.Sprintf("violates PodSecurity %q: %s", lv.String(), result.ForbiddenDetail()), nil
}
