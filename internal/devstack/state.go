package devstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// The stack's cluster name and the files in its folder.
const (
	Cluster      = "demo"
	DefaultDir   = ".reshard-dev"
	StateFile    = "state.json"
	PIDFile      = "etcd.pid"         // in the etcd folder, written by the etcd process itself
	BaselineFile = "fingerprint.json" // every tenant's rows before the load and the moves
	LoadsDir     = "loads"            // one <pid>.json per `dev load` since then
)

// State is <dir>/state.json: what a dev stack runs and where, written before anything
// starts and updated as parts come up, so Down can stop a half-started stack.
type State struct {
	Cluster string    `json:"cluster"`
	Dir     string    `json:"dir"`
	Created time.Time `json:"created"`
	Ready   bool      `json:"ready"` // everything up and loaded
	Shards  []Shard   `json:"shards"`
	Etcd    Etcd      `json:"etcd"`
	Data    DataState `json:"data"`
}

// Shard is one PostgreSQL cluster of the stack.
type Shard struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	Port int    `json:"port"`
	DSN  string `json:"dsn"`
}

// Etcd is the stack's etcd process.
type Etcd struct {
	Dir        string `json:"dir"`
	ClientPort int    `json:"client_port"`
	PeerPort   int    `json:"peer_port"`
	Endpoint   string `json:"endpoint"`
	PID        int    `json:"pid,omitempty"`
	Log        string `json:"log"`
}

// DataState is what regenerates the demo tenants (and their weights) for Load and Check.
type DataState struct {
	Tenants  int     `json:"tenants"`
	Scale    float64 `json:"scale"`
	Seed     uint64  `json:"seed"`
	HotRange string  `json:"hot_range"`
	Now      int64   `json:"now_unix"`
	// Distribution is DistHash for uuid tenant ids; empty (as before it existed) or DistRange
	// for bigint ones.
	Distribution string `json:"distribution,omitempty"`
}

// Options are the demo data options the stack was loaded with.
func (d DataState) Options() (demo.DataOptions, error) {
	o := demo.DataOptions{Tenants: d.Tenants, Scale: d.Scale, Seed: d.Seed, Now: time.Unix(d.Now, 0)}
	if d.HotRange != "" {
		r, err := catalog.ParseRange(d.HotRange)
		if err != nil {
			return o, err
		}
		o.HotRange = r
	}
	return o, nil
}

// ShardIndex is the position of the shard named name in st.Shards, or -1.
func (st *State) ShardIndex(name string) int {
	for i, s := range st.Shards {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// shardNames are the names of the stack's shards, in order.
func (st *State) shardNames() []string {
	names := make([]string, len(st.Shards))
	for i, s := range st.Shards {
		names[i] = s.Name
	}
	return names
}

// AbsDir is the absolute folder of a stack given as --dir.
func AbsDir(dir string) (string, error) {
	if strings.TrimSpace(dir) == "" {
		return "", errors.New("--dir is empty: give the folder of the dev stack, e.g. .reshard-dev")
	}
	return filepath.Abs(dir)
}

// ReadState reads the state of the stack in dir; an error wrapping os.ErrNotExist means
// there is none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): run `reshard dev down --dir %s`", filepath.Join(dir, StateFile), err, dir)
	}
	return &st, nil
}

// writeState replaces the state file whole, so a reader never sees half of it.
func writeState(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(st.Dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(st.Dir, StateFile))
}

// stateOf reads the state of the stack at --dir dirFlag, saying how to start one if none,
// and returns it with the stack's absolute folder.
func stateOf(dirFlag string) (*State, string, error) {
	dir, err := AbsDir(dirFlag)
	if err != nil {
		return nil, "", err
	}
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, dir, fmt.Errorf("no dev stack in %s (start one with `reshard dev up`)", dir)
	}
	return st, dir, err
}

// readyState reads a stack's state and refuses one that is not up.
func readyState(dirFlag string) (*State, error) {
	st, dir, err := stateOf(dirFlag)
	if err != nil {
		return nil, err
	}
	if !st.Ready {
		return nil, fmt.Errorf("the dev stack in %s did not finish starting: run `reshard dev down --dir %s`, then `reshard dev up`", dir, dirFlag)
	}
	return st, nil
}

// writeJSONFile replaces path with v as JSON, whole.
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged (%v): take the fingerprint again with `reshard dev check --save`", path, err)
	}
	return nil
}
