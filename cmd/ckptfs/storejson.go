package main

import (
	"time"

	"github.com/ckptfs/ckptfs/dedup"
)

// The --json documents of the store commands (docs/cli.md).

type checkpointJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Time        string `json:"time"` // RFC 3339 with its zone
	RootPID     int    `json:"root_pid"`
	Tasks       int    `json:"tasks"`
	MemoryBytes int64  `json:"memory_bytes"`
	BytesAdded  int64  `json:"bytes_added"`
}

func lsJSON(list []dedup.Summary) []checkpointJSON {
	out := make([]checkpointJSON, 0, len(list))
	for _, s := range list {
		out = append(out, checkpointJSON{ID: s.ID, Name: s.Name, Time: s.Time.Format(time.RFC3339Nano),
			RootPID: s.RootPID, Tasks: s.Tasks, MemoryBytes: s.MemoryBytes, BytesAdded: s.BytesAdded})
	}
	return out
}

type statsDoc struct {
	Checkpoints  int     `json:"checkpoints"`
	LogicalBytes int64   `json:"logical_bytes"`
	Pages        int64   `json:"pages"`
	PageBytes    int64   `json:"page_bytes"`
	DiskBytes    int64   `json:"disk_bytes"`
	Ratio        float64 `json:"dedup_ratio"`
}

func statsJSON(st dedup.StoreStats) statsDoc {
	return statsDoc{st.Checkpoints, st.LogicalBytes, st.Pages, st.PageBytes, st.DiskBytes, st.Ratio}
}

type gcDoc struct {
	PagesFreed      int64 `json:"pages_freed"`
	BytesFreed      int64 `json:"bytes_freed"`
	TablesFreed     int64 `json:"tables_freed"`
	DiskBytesBefore int64 `json:"disk_bytes_before"`
	DiskBytesAfter  int64 `json:"disk_bytes_after"`
}

func gcJSON(r dedup.GCResult) gcDoc {
	return gcDoc{r.Pages, r.Bytes, r.Tables, r.DiskBefore, r.DiskAfter}
}

// verifyResult is verify's --json document; with problems the exit
// status is 12.
type verifyResult struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}
