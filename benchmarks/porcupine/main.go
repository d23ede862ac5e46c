// Command porcupine-check checks JSON-lines histories (docs/history-format.md) with
// Porcupine, for benchmarks/bench_check.py to compare planaria's checker with:
//
//	porcupine-check [-missing JSON] FILE...
//
// It prints one JSON line per file: {"file", "verdict", "elapsed_s"}, the verdict
// "linearizable" or "not-linearizable" and the time to read, parse and check the file.
//
// The model is planaria's kv model (which contains its cas-register model: with missing
// keys reading as null, read/write/cas behave exactly alike): get/read, put/write,
// append (of strings), delete and cas [old new], a key per partition, states hashed
// with FNV-1a as in Porcupine's own kv test. As in planaria, failed operations are
// dropped, reads of unknown outcome too, and other operations of unknown outcome (info,
// or no completion) return after everything else: they may take effect any time after
// their call, or never.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

// A value is a JSON value as a comparable string: "s" + the text of a string, or "j" +
// the JSON of anything else, so that an append is a concatenation and == is equality.
func value(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "jnull", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return "s" + s, err
	}
	var compact bytes.Buffer
	err := json.Compact(&compact, raw)
	return "j" + compact.String(), err
}

const (
	read = iota
	write
	appendTo
	remove
	cas
)

type input struct {
	key string
	f   int
	arg string // write, append: the value; cas: the new value
	old string // cas: the value expected
}

type output struct {
	read    string // what a read returned
	unknown bool   // info or never completed: a cas may have failed
}

func model(missing string) porcupine.Model {
	return porcupine.Model{
		Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
			index := map[string]int{}
			var parts [][]porcupine.Operation
			for _, op := range ops {
				key := op.Input.(input).key
				i, seen := index[key]
				if !seen {
					i = len(parts)
					index[key] = i
					parts = append(parts, nil)
				}
				parts[i] = append(parts[i], op)
			}
			return parts
		},
		Init: func() interface{} { return missing },
		Step: func(state, in, out interface{}) (bool, interface{}) {
			st, op := state.(string), in.(input)
			switch op.f {
			case read:
				return out.(output).read == st, st
			case write:
				return true, op.arg
			case appendTo:
				if st == missing || st == "jnull" {
					st = "s"
				}
				if st[0] != 's' {
					panic("append to a value that is not a string is not supported")
				}
				return true, st + op.arg[1:]
			case remove:
				return true, missing
			default: // cas
				if st == op.old {
					return true, op.arg
				}
				return out.(output).unknown, st
			}
		},
		Hash: func(state interface{}) uint64 {
			h := uint64(14695981039346656037) // FNV-1a, 64 bits
			for _, b := range []byte(state.(string)) {
				h = (h ^ uint64(b)) * 1099511628211
			}
			return h
		},
	}
}

type event struct {
	Process json.RawMessage `json:"process"`
	Type    string          `json:"type"`
	F       string          `json:"f"`
	Key     json.RawMessage `json:"key"`
	Value   json.RawMessage `json:"value"`
	Time    *float64        `json:"time"`
}

func parseInput(e *event) (input, error) {
	in := input{key: string(e.Key)}
	var err error
	switch e.F {
	case "get", "read":
		in.f = read
	case "put", "write", "append":
		in.f = write
		if e.F == "append" {
			in.f = appendTo
		}
		in.arg, err = value(e.Value)
		if err == nil && in.f == appendTo && in.arg[0] != 's' {
			err = fmt.Errorf("append of a value that is not a string is not supported")
		}
	case "delete":
		in.f = remove
	case "cas":
		in.f = cas
		var pair []json.RawMessage
		if err = json.Unmarshal(e.Value, &pair); err == nil && len(pair) != 2 {
			err = fmt.Errorf("cas needs a value [old new]")
		}
		if err == nil {
			in.old, err = value(pair[0])
		}
		if err == nil {
			in.arg, err = value(pair[1])
		}
	default:
		err = fmt.Errorf("operation %q is not supported", e.F)
	}
	return in, err
}

func load(path string) ([]porcupine.Operation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ops []porcupine.Operation
	failed := map[int]bool{}
	pending := map[string]int{} // process -> its operation's index in ops
	var tick int64
	last := math.NaN()
	for n, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n+1, err)
		}
		// Porcupine's intervals are closed: events at the same time are concurrent.
		// Without times, each line is a time of its own.
		if e.Time == nil || *e.Time != last {
			tick++
		}
		if e.Time != nil {
			last = *e.Time
		}
		process := string(e.Process)
		i, busy := pending[process]
		if e.Type == "invoke" {
			if busy {
				return nil, fmt.Errorf("%s:%d: process %s invokes while busy", path, n+1, process)
			}
			in, err := parseInput(&e)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, n+1, err)
			}
			pending[process] = len(ops)
			ops = append(ops, porcupine.Operation{
				Input: in, Call: tick, Output: output{unknown: true}, Return: math.MaxInt64,
			})
			continue
		}
		if !busy {
			return nil, fmt.Errorf("%s:%d: %s with no pending invocation", path, n+1, e.Type)
		}
		delete(pending, process)
		switch e.Type {
		case "ok":
			ops[i].Return = tick
			if ops[i].Input.(input).f == read {
				read, err := value(e.Value)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %v", path, n+1, err)
				}
				ops[i].Output = output{read: read}
			} else {
				ops[i].Output = output{}
			}
		case "fail":
			failed[i] = true
		case "info":
		default:
			return nil, fmt.Errorf("%s:%d: unknown type %q", path, n+1, e.Type)
		}
	}
	kept := ops[:0]
	for i, op := range ops {
		unknownRead := op.Input.(input).f == read && op.Output.(output).unknown
		if !failed[i] && !unknownRead {
			kept = append(kept, op)
		}
	}
	return kept, nil
}

func main() {
	missingJSON := flag.String("missing", "null", "JSON of what a missing key reads as")
	flag.Parse()
	missing, err := value(json.RawMessage(*missingJSON))
	if err != nil {
		fmt.Fprintf(os.Stderr, "-missing %s: %v\n", *missingJSON, err)
		os.Exit(2)
	}
	m := model(missing)
	out := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		started := time.Now()
		ops, err := load(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		verdict := map[porcupine.CheckResult]string{
			porcupine.Ok: "linearizable", porcupine.Illegal: "not-linearizable",
		}[porcupine.CheckOperationsTimeout(m, ops, 0)]
		elapsed := time.Since(started).Seconds()
		out.Encode(map[string]interface{}{"file": path, "verdict": verdict, "elapsed_s": elapsed})
	}
}
