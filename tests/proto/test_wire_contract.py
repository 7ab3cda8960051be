"""The generated descriptors match the seed wire contract (tests/proto/contracts/wire.md) and cellar's own.

Existing clients of the seed services only keep working if every package, message, field number, type,
label, enum value and method path is exactly what the public projects published. This test reads those
facts from the contract document itself (not from a copy in code), so the contract and the protos cannot
drift apart silently. cellar's additions are pinned in ``CELLAR_WIRE`` below, in the same format, so a
renumbering of cellar's own API fails here too.

The parser is strict: an unrecognised line, a section without items or a count that disagrees with a
plain text scan of the document is an error, so a format change cannot make this test pass vacuously.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from tests.support import REPO as REPO_ROOT

if str(REPO_ROOT) not in sys.path:  # until pyproject sets pytest's `pythonpath = ["."]`
    sys.path.insert(0, str(REPO_ROOT))
WIRE_MD = Path(__file__).resolve().parent / "contracts" / "wire.md"

# Contract file name (as wire.md names it) -> the generated module that must implement it.
MODULES: dict[str, str] = {
    "runtime.proto": "proto.aurae.runtime_pb2",
    "observe.proto": "proto.aurae.observe_pb2",
    "common.proto": "proto.pb.common_pb2",
    "dispatcherFunction.proto": "proto.pb.dispatcherFunction_pb2",
    "dispatcherServer.proto": "proto.pb.dispatcherServer_pb2",
    "workerServer.proto": "proto.pb.workerServer_pb2",
    "Common.proto": "proto.sky.Common_pb2",
    "RunJob.proto": "proto.sky.RunJob_pb2",
    "StageInFile.proto": "proto.sky.StageInFile_pb2",
    "AgentService.proto": "proto.sky.AgentService_pb2",
    "protosupport/v1/protosupport.proto": "proto.parigot.protosupport.v1.protosupport_pb2",
    "file/v1/file.proto": "proto.parigot.file.v1.file_pb2",
    "queue/v1/queue.proto": "proto.parigot.queue.v1.queue_pb2",
    "test/v1/test.proto": "proto.parigot.test.v1.test_pb2",
    "syscall/v1/syscall.proto": "proto.parigot.syscall.v1.syscall_pb2",
    "scaleout.proto": "proto.scaleout.scaleout_pb2",
    "cellar/v1/types.proto": "proto.cellar.v1.types_pb2",
    "cellar/v1/cells.proto": "proto.cellar.v1.cells_pb2",
    "cellar/v1/logs.proto": "proto.cellar.v1.logs_pb2",
    "cellar/v1/queues.proto": "proto.cellar.v1.queues_pb2",
    "cellar/v1/inventory.proto": "proto.cellar.v1.inventory_pb2",
    "cellar/v1/fl.proto": "proto.cellar.v1.fl_pb2",
    "cellar/v1/jobs.proto": "proto.cellar.v1.jobs_pb2",
    "cellar/v1/report.proto": "proto.cellar.v1.report_pb2",
    "cellar/v1/exec.proto": "proto.cellar.v1.exec_pb2",
}

# First field number cellar may use inside a seed message.
FIRST_EXTENSION_NUMBER = 10

# cellar's wire contract, in wire.md's format. Sections for a seed file list only the fields cellar
# added to seed messages; sections for cellar's own files are complete.
CELLAR_WIRE = """
### file `runtime.proto` — syntax proto3, package `runtime`

message `runtime.Cell`

| field | number | type | label |
|---|---|---|---|
| cpu_weight | 10 | uint32 | optional |
| cpu_max_quota_us | 11 | uint64 | optional |
| cpu_max_period_us | 12 | uint64 | optional |
| cpuset_cpus | 13 | string |  |
| cpuset_mems | 14 | string |  |
| memory_min | 15 | uint64 | optional |
| memory_low | 16 | uint64 | optional |
| memory_high | 17 | uint64 | optional |
| memory_max | 18 | uint64 | optional |
| swap_max | 19 | uint64 | optional |
| pids_max | 20 | uint64 | optional |
| isolate_process | 21 | bool |  |
| isolate_network | 22 | bool |  |
| veth | 23 | cellar.v1.Veth |  |
| privileged | 24 | bool |  |
| cap_add | 25 | string | repeated |
| cap_drop | 26 | string | repeated |
| grant_role | 27 | string |  |
| mounts | 28 | cellar.v1.Mount | repeated |
| rootfs | 29 | string |  |
| keep_data | 30 | bool |  |
| persist | 31 | bool |  |

message `runtime.Executable`

| field | number | type | label |
|---|---|---|---|
| argv | 10 | string | repeated |
| env | 11 | runtime.Executable.EnvEntry | repeated |
| cwd | 12 | string |  |
| uid | 13 | uint32 | optional |
| gid | 14 | uint32 | optional |
| privileged | 15 | bool |  |
| cap_add | 16 | string | repeated |
| cap_drop | 17 | string | repeated |
| restart | 18 | cellar.v1.RestartPolicy |  |
| health | 19 | cellar.v1.HealthCheck |  |
| stdin | 20 | bool |  |
| tty | 21 | bool |  |

message `runtime.StartCellResponse`

| field | number | type | label |
|---|---|---|---|
| host_pid | 10 | int32 |  |
| cell_pid | 11 | int32 |  |
| run | 12 | uint32 |  |

message `runtime.StopCellRequest`

| field | number | type | label |
|---|---|---|---|
| grace_period_ms | 10 | uint32 | optional |

message `runtime.StopCellResponse`

| field | number | type | label |
|---|---|---|---|
| exit | 10 | cellar.v1.ExitStatus |  |

message `runtime.FreeCellRequest`

| field | number | type | label |
|---|---|---|---|
| grace_period_ms | 10 | uint32 | optional |

### file `cellar/v1/types.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.Veth`

| field | number | type | label |
|---|---|---|---|
| host_ifname | 1 | string |  |
| cell_ifname | 2 | string |  |
| host_address | 3 | string |  |
| cell_address | 4 | string |  |

message `cellar.v1.Mount`

| field | number | type | label |
|---|---|---|---|
| source | 1 | string |  |
| target | 2 | string |  |
| read_only | 3 | bool |  |

message `cellar.v1.ExitStatus`

| field | number | type | label |
|---|---|---|---|
| code | 1 | int32 | optional |
| signal | 2 | int32 | optional |
| oom_killed | 3 | bool |  |
| started_at_ns | 4 | int64 |  |
| ended_at_ns | 5 | int64 |  |

enum `cellar.v1.ExecutableState`: EXECUTABLE_STATE_UNSPECIFIED=0, EXECUTABLE_STATE_STARTING=1, EXECUTABLE_STATE_RUNNING=2, EXECUTABLE_STATE_STOPPING=3, EXECUTABLE_STATE_EXITED=4, EXECUTABLE_STATE_LOST=5, EXECUTABLE_STATE_BACKOFF=6, EXECUTABLE_STATE_FAILED=7

enum `cellar.v1.RestartMode`: RESTART_MODE_UNSPECIFIED=0, RESTART_MODE_NEVER=1, RESTART_MODE_ON_FAILURE=2, RESTART_MODE_ALWAYS=3

message `cellar.v1.RestartPolicy`

| field | number | type | label |
|---|---|---|---|
| mode | 1 | cellar.v1.RestartMode |  |
| delay_s | 2 | double | optional |
| max_delay_s | 3 | double | optional |
| reset_after_s | 4 | double | optional |
| limit_burst | 5 | uint32 | optional |
| limit_interval_s | 6 | double | optional |

enum `cellar.v1.HealthCheckKind`: HEALTH_CHECK_KIND_UNSPECIFIED=0, HEALTH_CHECK_KIND_EXEC=1, HEALTH_CHECK_KIND_TCP=2, HEALTH_CHECK_KIND_HTTP=3, HEALTH_CHECK_KIND_GRPC=4

message `cellar.v1.HealthCheck`

| field | number | type | label |
|---|---|---|---|
| kind | 1 | cellar.v1.HealthCheckKind |  |
| command | 2 | string | repeated |
| port | 3 | uint32 |  |
| path | 4 | string |  |
| service | 5 | string |  |
| interval_s | 6 | double | optional |
| timeout_s | 7 | double | optional |
| retries | 8 | uint32 | optional |
| start_period_s | 9 | double | optional |

enum `cellar.v1.HealthState`: HEALTH_STATE_UNSPECIFIED=0, HEALTH_STATE_STARTING=1, HEALTH_STATE_HEALTHY=2, HEALTH_STATE_UNHEALTHY=3

message `cellar.v1.ExecutableInfo`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| name | 2 | string |  |
| state | 3 | cellar.v1.ExecutableState |  |
| argv | 4 | string | repeated |
| command | 5 | string |  |
| description | 6 | string |  |
| host_pid | 7 | int32 |  |
| cell_pid | 8 | int32 |  |
| run | 9 | uint32 |  |
| started_at_ns | 10 | int64 |  |
| exit | 11 | cellar.v1.ExitStatus |  |
| privileged | 12 | bool |  |
| restarts | 13 | uint32 |  |
| restart_at_ns | 14 | int64 |  |
| restart | 15 | cellar.v1.RestartPolicy |  |
| reason | 16 | string |  |
| health_check | 17 | cellar.v1.HealthCheck |  |
| health | 18 | cellar.v1.HealthState |  |
| health_failures | 19 | uint32 |  |
| health_failed_probes | 20 | uint64 |  |
| health_result | 21 | string |  |

message `cellar.v1.PressureStats`

| field | number | type | label |
|---|---|---|---|
| cpu_some_avg10 | 1 | double |  |
| memory_some_avg10 | 2 | double |  |
| memory_full_avg10 | 3 | double |  |
| io_some_avg10 | 4 | double |  |
| cpu_some_total_us | 5 | uint64 |  |
| memory_some_total_us | 6 | uint64 |  |
| io_some_total_us | 7 | uint64 |  |

message `cellar.v1.CellStats`

| field | number | type | label |
|---|---|---|---|
| memory_current | 1 | uint64 |  |
| memory_peak | 2 | uint64 |  |
| cpu_usage_us | 3 | uint64 |  |
| cpu_user_us | 4 | uint64 |  |
| cpu_system_us | 5 | uint64 |  |
| pids_current | 6 | uint64 |  |
| oom_kills | 7 | uint64 |  |
| pressure | 8 | cellar.v1.PressureStats |  |

### file `cellar/v1/cells.proto` — syntax proto3, package `cellar.v1`

enum `cellar.v1.CellState`: CELL_STATE_UNSPECIFIED=0, CELL_STATE_ACTIVE=1, CELL_STATE_FROZEN=2, CELL_STATE_FREEING=3

message `cellar.v1.CellInfo`

| field | number | type | label |
|---|---|---|---|
| name | 1 | string |  |
| state | 2 | cellar.v1.CellState |  |
| cgroup_path | 3 | string |  |
| cgroup_v2_limits | 4 | bool |  |
| isolate_process | 5 | bool |  |
| isolate_network | 6 | bool |  |
| netns | 7 | string |  |
| holder_pid | 8 | int32 |  |
| created_at_ns | 9 | int64 |  |
| cell | 10 | runtime.Cell |  |
| executables | 11 | cellar.v1.ExecutableInfo | repeated |
| stats | 12 | cellar.v1.CellStats |  |
| privileged | 13 | bool |  |
| capabilities | 14 | string | repeated |

message `cellar.v1.ListCellsRequest`

| field | number | type | label |
|---|---|---|---|
| prefix | 1 | string |  |
| include_stats | 2 | bool |  |

message `cellar.v1.ListCellsResponse`

| field | number | type | label |
|---|---|---|---|
| cells | 1 | cellar.v1.CellInfo | repeated |

message `cellar.v1.InspectCellRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |

message `cellar.v1.FreezeCellRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |

message `cellar.v1.FreezeCellResponse` (no fields)

message `cellar.v1.ThawCellRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |

message `cellar.v1.ThawCellResponse` (no fields)

message `cellar.v1.WatchEventsRequest`

| field | number | type | label |
|---|---|---|---|
| cell_prefix | 1 | string |  |

message `cellar.v1.ExecutableEvent`

| field | number | type | label |
|---|---|---|---|
| timestamp_ns | 1 | int64 |  |
| executable | 2 | cellar.v1.ExecutableInfo |  |
| kind | 3 | string |  |

message `cellar.v1.InfoRequest` (no fields)

message `cellar.v1.NodeInfo`

| field | number | type | label |
|---|---|---|---|
| version | 1 | string |  |
| hostname | 2 | string |  |
| cgroup_v2 | 3 | bool |  |
| cgroup_v2_limits | 4 | bool |  |
| cgroup_mode | 5 | string |  |
| cgroup_root | 6 | string |  |
| started_at_ns | 7 | int64 |  |

message `cellar.v1.ApplyRequest`

| field | number | type | label |
|---|---|---|---|
| manifest | 1 | string |  |
| file_name | 2 | string |  |
| format | 3 | string |  |
| prune | 4 | bool |  |
| dry_run | 5 | bool |  |

message `cellar.v1.ManifestChange`

| field | number | type | label |
|---|---|---|---|
| action | 1 | string |  |
| cell_name | 2 | string |  |
| executable_name | 3 | string |  |
| detail | 4 | string |  |

message `cellar.v1.ApplyResponse`

| field | number | type | label |
|---|---|---|---|
| changes | 1 | cellar.v1.ManifestChange | repeated |

message `cellar.v1.GetManifestRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |

message `cellar.v1.GetManifestResponse`

| field | number | type | label |
|---|---|---|---|
| manifest | 1 | string |  |
| applied | 2 | bool |  |

service `cellar.v1.Cells`
- `List`: cellar.v1.ListCellsRequest → cellar.v1.ListCellsResponse
- `Inspect`: cellar.v1.InspectCellRequest → cellar.v1.CellInfo
- `Freeze`: cellar.v1.FreezeCellRequest → cellar.v1.FreezeCellResponse
- `Thaw`: cellar.v1.ThawCellRequest → cellar.v1.ThawCellResponse
- `WatchEvents`: cellar.v1.WatchEventsRequest → stream cellar.v1.ExecutableEvent
- `Info`: cellar.v1.InfoRequest → cellar.v1.NodeInfo
- `Apply`: cellar.v1.ApplyRequest → cellar.v1.ApplyResponse
- `GetManifest`: cellar.v1.GetManifestRequest → cellar.v1.GetManifestResponse

### file `cellar/v1/logs.proto` — syntax proto3, package `cellar.v1`

enum `cellar.v1.LogChannel`: LOG_CHANNEL_UNSPECIFIED=0, LOG_CHANNEL_STDOUT=1, LOG_CHANNEL_STDERR=2, LOG_CHANNEL_EXIT=3, LOG_CHANNEL_LOST=4

message `cellar.v1.ReadLogsRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| executable_name | 2 | string |  |
| channels | 3 | cellar.v1.LogChannel | repeated |
| tail | 4 | uint64 | optional |
| since_ns | 5 | int64 | optional |
| until_ns | 6 | int64 | optional |
| cursor | 7 | string |  |
| follow | 8 | bool |  |
| limit_bytes | 9 | uint64 |  |
| run | 10 | int32 |  |
| packed | 11 | bool |  |

message `cellar.v1.LogRecord`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| executable_name | 2 | string |  |
| run | 3 | uint32 |  |
| seq | 4 | uint64 |  |
| timestamp_ns | 5 | int64 |  |
| channel | 6 | cellar.v1.LogChannel |  |
| data | 7 | bytes |  |
| partial | 8 | bool |  |
| lost_count | 9 | uint64 |  |
| exit | 10 | cellar.v1.ExitStatus |  |

message `cellar.v1.LogBatch`

| field | number | type | label |
|---|---|---|---|
| records | 1 | cellar.v1.LogRecord | repeated |
| cursor | 2 | string |  |
| packed | 3 | bytes |  |
| executable_name | 4 | string |  |
| run | 5 | uint32 |  |

message `cellar.v1.PurgeLogsRequest`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| executable_name | 2 | string |  |

message `cellar.v1.PurgeLogsResponse`

| field | number | type | label |
|---|---|---|---|
| runs | 1 | uint32 |  |
| bytes | 2 | uint64 |  |

service `cellar.v1.Logs`
- `Read`: cellar.v1.ReadLogsRequest → stream cellar.v1.LogBatch
- `Purge`: cellar.v1.PurgeLogsRequest → cellar.v1.PurgeLogsResponse

### file `workerServer.proto` — syntax proto3, package `pb`

message `pb.Port`

| field | number | type | label |
|---|---|---|---|
| protocol | 10 | string |  |
| cell | 11 | string |  |
| executable | 12 | string |  |
| process | 13 | string |  |
| pid | 14 | uint32 |  |

message `pb.Iface`

| field | number | type | label |
|---|---|---|---|
| state | 10 | string |  |
| netns | 11 | string |  |

message `pb.Machine`

| field | number | type | label |
|---|---|---|---|
| hostname | 10 | string |  |
| os | 11 | string |  |
| kernel | 12 | string |  |
| cellar_version | 13 | string |  |
| cgroup_mode | 14 | string |  |
| api_address | 15 | string |  |
| cpus | 16 | uint32 |  |
| memory_bytes | 17 | uint64 |  |
| cells | 18 | cellar.v1.ReportCell | repeated |
| usage | 19 | cellar.v1.ReportUsage |  |

### file `cellar/v1/report.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.ReportCell`

| field | number | type | label |
|---|---|---|---|
| name | 1 | string |  |
| state | 2 | string |  |
| cpu_max_millicores | 3 | uint64 |  |
| memory_max_bytes | 4 | uint64 |  |
| pids_max | 5 | uint64 |  |
| executables | 6 | cellar.v1.ReportExecutable | repeated |

message `cellar.v1.ReportExecutable`

| field | number | type | label |
|---|---|---|---|
| name | 1 | string |  |
| state | 2 | string |  |
| pid | 3 | uint32 |  |
| restarts | 4 | uint32 |  |
| health | 5 | string |  |
| exit | 6 | string |  |
| started_at_ns | 7 | int64 |  |

message `cellar.v1.ReportUsage`

| field | number | type | label |
|---|---|---|---|
| at_ns | 1 | int64 |  |
| cpu_usage_us | 2 | uint64 |  |
| memory_used_bytes | 3 | uint64 |  |
| cells | 4 | cellar.v1.ReportCellUsage | repeated |

message `cellar.v1.ReportCellUsage`

| field | number | type | label |
|---|---|---|---|
| cell | 1 | string |  |
| cpu_usage_us | 2 | uint64 |  |
| memory_bytes | 3 | uint64 |  |

### file `cellar/v1/inventory.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.GetInventoryRequest` (no fields)

message `cellar.v1.GetInventoryResponse`

| field | number | type | label |
|---|---|---|---|
| machine | 1 | pb.Machine |  |
| savers | 2 | cellar.v1.SaverState | repeated |

message `cellar.v1.SaverState`

| field | number | type | label |
|---|---|---|---|
| address | 1 | string |  |
| delivered_at_ns | 2 | int64 |  |
| last_error | 3 | string |  |
| attempts | 4 | uint64 |  |

message `cellar.v1.ListMachinesRequest`

| field | number | type | label |
|---|---|---|---|
| full | 1 | bool |  |

message `cellar.v1.MachineSummary`

| field | number | type | label |
|---|---|---|---|
| uuid | 1 | string |  |
| received_at_ns | 2 | int64 |  |
| peer | 3 | string |  |
| ifaces | 4 | uint32 |  |
| addresses | 5 | uint32 |  |
| ports | 6 | uint32 |  |
| error | 7 | string |  |
| reports | 8 | uint32 |  |
| hostname | 9 | string |  |
| api_address | 10 | string |  |
| cells | 11 | uint32 |  |
| executables | 12 | uint32 |  |
| machine | 13 | pb.Machine |  |

message `cellar.v1.ListMachinesResponse`

| field | number | type | label |
|---|---|---|---|
| machines | 1 | cellar.v1.MachineSummary | repeated |

message `cellar.v1.ShowMachineRequest`

| field | number | type | label |
|---|---|---|---|
| uuid | 1 | string |  |
| history | 2 | uint32 |  |

message `cellar.v1.MachineReport`

| field | number | type | label |
|---|---|---|---|
| machine | 1 | pb.Machine |  |
| received_at_ns | 2 | int64 |  |
| peer | 3 | string |  |

message `cellar.v1.ShowMachineResponse`

| field | number | type | label |
|---|---|---|---|
| latest | 1 | cellar.v1.MachineReport |  |
| history | 2 | cellar.v1.MachineReport | repeated |

message `cellar.v1.ListDispatchRequest` (no fields)

message `cellar.v1.RegisteredServer`

| field | number | type | label |
|---|---|---|---|
| ip | 1 | string |  |
| registered_at_ns | 2 | int64 |  |
| healthy | 3 | bool |  |
| subject | 4 | string |  |
| functions | 5 | uint32 |  |
| pid | 6 | uint32 |  |

message `cellar.v1.ListDispatchResponse`

| field | number | type | label |
|---|---|---|---|
| servers | 1 | cellar.v1.RegisteredServer | repeated |

service `cellar.v1.Inventory`
- `Get`: cellar.v1.GetInventoryRequest → cellar.v1.GetInventoryResponse

service `cellar.v1.Machines`
- `List`: cellar.v1.ListMachinesRequest → cellar.v1.ListMachinesResponse
- `Show`: cellar.v1.ShowMachineRequest → cellar.v1.ShowMachineResponse

service `cellar.v1.Dispatch`
- `List`: cellar.v1.ListDispatchRequest → cellar.v1.ListDispatchResponse

### file `cellar/v1/jobs.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.ListJobsRequest` (no fields)

message `cellar.v1.ListJobsResponse`

| field | number | type | label |
|---|---|---|---|
| jobs | 1 | cellar.v1.JobInfo | repeated |

message `cellar.v1.GetJobRequest`

| field | number | type | label |
|---|---|---|---|
| job_id | 1 | string |  |

message `cellar.v1.StagedJobFile`

| field | number | type | label |
|---|---|---|---|
| name | 1 | string |  |
| file_id | 2 | string |  |

message `cellar.v1.JobInfo`

| field | number | type | label |
|---|---|---|---|
| job_id | 1 | string |  |
| phase | 2 | string |  |
| code | 3 | string |  |
| owner | 4 | string |  |
| cell_name | 5 | string |  |
| executable_name | 6 | string |  |
| work_dir | 7 | string |  |
| argv | 8 | string | repeated |
| staged | 9 | cellar.v1.StagedJobFile | repeated |
| exit_code | 10 | int32 | optional |
| signal | 11 | int32 | optional |
| oom_killed | 12 | bool |  |
| error | 13 | string |  |
| created_at_ns | 14 | int64 |  |
| started_at_ns | 15 | int64 |  |
| ended_at_ns | 16 | int64 |  |
| python_version | 17 | string |  |

service `cellar.v1.Jobs`
- `List`: cellar.v1.ListJobsRequest → cellar.v1.ListJobsResponse
- `Get`: cellar.v1.GetJobRequest → cellar.v1.JobInfo

### file `RunJob.proto` — syntax proto2, package `(none)`

message `RunJobResponse`

| field | number | type | label |
|---|---|---|---|
| exit_code | 10 | int32 | optional |
| signal | 11 | int32 | optional |
| oom_killed | 12 | bool | optional |
| phase | 13 | string | optional |
| error | 14 | string | optional |
| cell_name | 15 | string | optional |
| executable_name | 16 | string | optional |
| started_at_ns | 17 | int64 | optional |
| ended_at_ns | 18 | int64 | optional |

### file `file/v1/file.proto` — syntax proto3, package `file.v1`

message `file.v1.ReadResponse`

| field | number | type | label |
|---|---|---|---|
| data | 10 | bytes |  |

message `file.v1.StatResponse`

| field | number | type | label |
|---|---|---|---|
| entries | 10 | file.v1.FileInfo | repeated |

### file `dispatcherServer.proto` — syntax proto3, package `pb`

message `pb.RegisterReq`

| field | number | type | label |
|---|---|---|---|
| port | 10 | uint32 |  |

### file `queue/v1/queue.proto` — syntax proto3, package `queue.v1`

message `queue.v1.CreateQueueRequest`

| field | number | type | label |
|---|---|---|---|
| shared | 10 | bool |  |

### file `cellar/v1/queues.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.ListQueuesRequest` (no fields)

message `cellar.v1.QueueSummary`

| field | number | type | label |
|---|---|---|---|
| name | 1 | string |  |
| id | 2 | protosupport.v1.IdRaw |  |
| owner | 3 | string |  |
| length | 4 | int64 |  |
| created_unix_ns | 5 | int64 |  |

message `cellar.v1.ListQueuesResponse`

| field | number | type | label |
|---|---|---|---|
| queues | 1 | cellar.v1.QueueSummary | repeated |

service `cellar.v1.Queues`
- `List`: cellar.v1.ListQueuesRequest → cellar.v1.ListQueuesResponse

### file `cellar/v1/fl.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.FlClient`

| field | number | type | label |
|---|---|---|---|
| client_id | 1 | string |  |
| name | 2 | string |  |
| online | 3 | bool |  |
| connected | 4 | bool |  |
| last_seen_ns | 5 | int64 |  |
| first_seen_ns | 6 | int64 |  |
| version | 7 | string |  |
| queued | 8 | uint32 |  |

message `cellar.v1.FlTask`

| field | number | type | label |
|---|---|---|---|
| correlation_id | 1 | string |  |
| client_id | 2 | string |  |
| type | 3 | string |  |
| model_id | 4 | string |  |
| data | 5 | string |  |
| session_id | 6 | string |  |
| round_id | 7 | string |  |
| status | 8 | string |  |
| created_ns | 9 | int64 |  |
| started_ns | 10 | int64 |  |
| finished_ns | 11 | int64 |  |
| timeout_s | 12 | double |  |
| cancel_requested | 13 | bool |  |
| response | 14 | string |  |
| seq | 15 | int64 |  |

message `cellar.v1.PushTaskRequest`

| field | number | type | label |
|---|---|---|---|
| client_id | 1 | string |  |
| type | 2 | string |  |
| model_id | 3 | string |  |
| data | 4 | string |  |
| session_id | 5 | string |  |
| round_id | 6 | string |  |
| timeout_s | 7 | double |  |

message `cellar.v1.CancelTaskRequest`

| field | number | type | label |
|---|---|---|---|
| correlation_id | 1 | string |  |

message `cellar.v1.ListFlClientsRequest` (no fields)

message `cellar.v1.ListFlClientsResponse`

| field | number | type | label |
|---|---|---|---|
| clients | 1 | cellar.v1.FlClient | repeated |

message `cellar.v1.ListFlTasksRequest`

| field | number | type | label |
|---|---|---|---|
| client_id | 1 | string |  |
| active_only | 2 | bool |  |

message `cellar.v1.ListFlTasksResponse`

| field | number | type | label |
|---|---|---|---|
| tasks | 1 | cellar.v1.FlTask | repeated |

message `cellar.v1.FlRecord`

| field | number | type | label |
|---|---|---|---|
| id | 1 | int64 |  |
| kind | 2 | string |  |
| client_id | 3 | string |  |
| correlation_id | 4 | string |  |
| model_id | 5 | string |  |
| body | 6 | string |  |
| ts_ns | 7 | int64 |  |

message `cellar.v1.ListFlRecordsRequest`

| field | number | type | label |
|---|---|---|---|
| kind | 1 | string |  |
| client_id | 2 | string |  |
| after_id | 3 | int64 |  |
| limit | 4 | uint32 |  |

message `cellar.v1.ListFlRecordsResponse`

| field | number | type | label |
|---|---|---|---|
| records | 1 | cellar.v1.FlRecord | repeated |

message `cellar.v1.FlModel`

| field | number | type | label |
|---|---|---|---|
| model_id | 1 | string |  |
| sha256 | 2 | string |  |
| size | 3 | int64 |  |
| created_ns | 4 | int64 |  |
| last_used_ns | 5 | int64 |  |
| arriving | 6 | bool |  |

message `cellar.v1.ListFlModelsRequest` (no fields)

message `cellar.v1.ListFlModelsResponse`

| field | number | type | label |
|---|---|---|---|
| models | 1 | cellar.v1.FlModel | repeated |
| used_bytes | 2 | int64 |  |
| max_bytes | 3 | int64 |  |

service `cellar.v1.Federation`
- `PushTask`: cellar.v1.PushTaskRequest → cellar.v1.FlTask
- `CancelTask`: cellar.v1.CancelTaskRequest → cellar.v1.FlTask
- `ListClients`: cellar.v1.ListFlClientsRequest → cellar.v1.ListFlClientsResponse
- `ListTasks`: cellar.v1.ListFlTasksRequest → cellar.v1.ListFlTasksResponse
- `ListRecords`: cellar.v1.ListFlRecordsRequest → cellar.v1.ListFlRecordsResponse
- `ListModels`: cellar.v1.ListFlModelsRequest → cellar.v1.ListFlModelsResponse

### file `cellar/v1/exec.proto` — syntax proto3, package `cellar.v1`

message `cellar.v1.WindowSize`

| field | number | type | label |
|---|---|---|---|
| rows | 1 | uint32 |  |
| cols | 2 | uint32 |  |

message `cellar.v1.ExecStart`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| argv | 2 | string | repeated |
| env | 3 | string | repeated |
| cwd | 4 | string |  |
| user | 5 | string |  |
| stdin | 6 | bool |  |
| tty | 7 | bool |  |
| term | 8 | string |  |
| size | 9 | cellar.v1.WindowSize |  |

message `cellar.v1.ExecRequest`

| field | number | type | label |
|---|---|---|---|
| start | 1 | cellar.v1.ExecStart |  |
| stdin | 2 | bytes |  |
| close_stdin | 3 | bool |  |
| resize | 4 | cellar.v1.WindowSize |  |
| signal | 5 | uint32 |  |

message `cellar.v1.ExecStarted`

| field | number | type | label |
|---|---|---|---|
| session | 1 | string |  |
| host_pid | 2 | int64 |  |
| cell_pid | 3 | int64 |  |
| writer | 4 | bool |  |
| tty | 5 | bool |  |

message `cellar.v1.AttachStart`

| field | number | type | label |
|---|---|---|---|
| cell_name | 1 | string |  |
| executable_name | 2 | string |  |

message `cellar.v1.AttachRequest`

| field | number | type | label |
|---|---|---|---|
| start | 1 | cellar.v1.AttachStart |  |
| stdin | 2 | bytes |  |
| resize | 3 | cellar.v1.WindowSize |  |

message `cellar.v1.ExecExit`

| field | number | type | label |
|---|---|---|---|
| exit_code | 1 | int32 |  |
| signal | 2 | int32 |  |

message `cellar.v1.ExecResponse`

| field | number | type | label |
|---|---|---|---|
| started | 1 | cellar.v1.ExecStarted |  |
| stdout | 2 | bytes |  |
| stderr | 3 | bytes |  |
| exit | 4 | cellar.v1.ExecExit |  |

service `cellar.v1.Sessions`
- `Exec`: stream cellar.v1.ExecRequest → stream cellar.v1.ExecResponse
- `Attach`: stream cellar.v1.AttachRequest → stream cellar.v1.ExecResponse
"""


# --------------------------------------------------------------------------------------------------
# The contract document


@dataclass(frozen=True)
class WireField:
    name: str
    number: int
    type: str
    label: str  # "", "optional", "required" or "repeated", as written in a .proto file


@dataclass
class WireMessage:
    full_name: str
    fields: list[WireField] = field(default_factory=list)


@dataclass(frozen=True)
class WireEnum:
    full_name: str
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class WireMethod:
    name: str
    input: str
    output: str
    client_streaming: bool
    server_streaming: bool


@dataclass
class WireService:
    full_name: str
    methods: list[WireMethod] = field(default_factory=list)


@dataclass
class WireFile:
    name: str
    syntax: str
    package: str
    messages: list[WireMessage] = field(default_factory=list)
    enums: list[WireEnum] = field(default_factory=list)
    services: list[WireService] = field(default_factory=list)


class ContractFormatError(AssertionError):
    """The contract document no longer has the shape this parser knows: fix the parser, never skip."""


_FILE = re.compile(r"^### file `([^`]+)` — syntax (proto2|proto3), package `([^`]+)`$")
_MESSAGE = re.compile(r"^message `([\w.]+)`( \(no fields\))?$")
_ENUM = re.compile(r"^enum `([\w.]+)`: (.+)$")
_ENUM_VALUE = re.compile(r"^(\w+)=(-?\d+)$")
_SERVICE = re.compile(r"^service `([\w.]+)`( \(no methods\))?$")
_TABLE_HEAD = "| field | number | type | label |"
_TABLE_RULE = "|---|---|---|---|"
_ROW = re.compile(r"^\| (\w+) \| (\d+) \| ([\w.]+) \| (|optional|required|repeated) ?\|$")
_METHOD = re.compile(r"^- `(\w+)`: (stream )?([\w.]+) → (stream )?([\w.]+)$")


def parse_contract(text: str, source: str) -> list[WireFile]:
    """Parse the `### file` sections of a contract document; raise on anything unrecognised."""
    files: list[WireFile] = []
    empty_declared: set[str] = set()  # messages / services marked "(no fields)" / "(no methods)"
    current: WireMessage | WireService | None = None

    def fail(lineno: int, why: str) -> ContractFormatError:
        return ContractFormatError(f"{source}:{lineno}: {why}")

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("## "):  # a seed heading ends the previous file section
            current = None
            continue
        if m := _FILE.match(line):
            package = "" if m.group(3) == "(none)" else m.group(3)
            files.append(WireFile(name=m.group(1), syntax=m.group(2), package=package))
            current = None
            continue
        if not files:
            if line.startswith(("### ", "message ", "enum ", "service ", "| ", "- `")):
                raise fail(lineno, f"contract item before any `### file` section: {line!r}")
            continue  # the introduction
        wire_file = files[-1]
        if m := _MESSAGE.match(line):
            current = WireMessage(m.group(1))
            wire_file.messages.append(current)
            if m.group(2):
                empty_declared.add(current.full_name)
        elif m := _SERVICE.match(line):
            current = WireService(m.group(1))
            wire_file.services.append(current)
            if m.group(2):
                empty_declared.add(current.full_name)
        elif m := _ENUM.match(line):
            values = []
            for item in m.group(2).split(", "):
                value = _ENUM_VALUE.match(item)
                if value is None:
                    raise fail(lineno, f"bad enum value {item!r}")
                values.append((value.group(1), int(value.group(2))))
            wire_file.enums.append(WireEnum(m.group(1), tuple(values)))
            current = None
        elif line in (_TABLE_HEAD, _TABLE_RULE):
            if not isinstance(current, WireMessage) or current.fields:
                raise fail(lineno, "field table outside a message")
        elif line.startswith("|"):
            row = _ROW.match(line)
            if row is None or not isinstance(current, WireMessage):
                raise fail(lineno, f"unrecognised field row {line!r}")
            current.fields.append(WireField(row.group(1), int(row.group(2)), row.group(3), row.group(4)))
        elif line.startswith("- "):
            method = _METHOD.match(line)
            if method is None or not isinstance(current, WireService):
                raise fail(lineno, f"unrecognised method bullet {line!r}")
            current.methods.append(
                WireMethod(
                    name=method.group(1),
                    input=method.group(3),
                    output=method.group(5),
                    client_streaming=bool(method.group(2)),
                    server_streaming=bool(method.group(4)),
                )
            )
        else:
            raise fail(lineno, f"unrecognised line {line!r}")

    _check_parse_is_complete(text, source, files, empty_declared)
    return files


def _check_parse_is_complete(text: str, source: str, files: list[WireFile], empty_declared: set[str]) -> None:
    """Refuse empty sections, and cross-check the counts against a plain scan of the text."""
    if not files:
        raise ContractFormatError(f"{source}: no `### file` sections found")
    for wire_file in files:
        if not (wire_file.messages or wire_file.enums or wire_file.services):
            raise ContractFormatError(f"{source}: file {wire_file.name} has no messages, enums or services")
        for message in wire_file.messages:
            declared_empty = message.full_name in empty_declared
            if declared_empty == bool(message.fields):
                raise ContractFormatError(
                    f"{source}: message {message.full_name}: fields do not match its heading"
                )
        for service in wire_file.services:
            declared_empty = service.full_name in empty_declared
            if declared_empty == bool(service.methods):
                raise ContractFormatError(
                    f"{source}: service {service.full_name}: methods do not match its heading"
                )
        for enum in wire_file.enums:
            if not enum.values:
                raise ContractFormatError(f"{source}: enum {enum.full_name} has no values")

    lines = [line.strip() for line in text.splitlines()]
    scanned = {
        "files": sum(line.startswith("### file `") for line in lines),
        "messages": sum(line.startswith("message `") for line in lines),
        "enums": sum(line.startswith("enum `") for line in lines),
        "services": sum(line.startswith("service `") for line in lines),
        "fields": sum(line.startswith("| ") and line != _TABLE_HEAD for line in lines),
        "methods": sum(line.startswith("- `") for line in lines),
    }
    parsed = {
        "files": len(files),
        "messages": sum(len(f.messages) for f in files),
        "enums": sum(len(f.enums) for f in files),
        "services": sum(len(f.services) for f in files),
        "fields": sum(len(m.fields) for f in files for m in f.messages),
        "methods": sum(len(s.methods) for f in files for s in f.services),
    }
    if scanned != parsed:
        raise ContractFormatError(f"{source}: parsed {parsed} but the text has {scanned}")
    for kind in ("messages", "enums", "services", "fields", "methods"):
        if parsed[kind] == 0:
            raise ContractFormatError(f"{source}: no {kind} found")


SEED = parse_contract(WIRE_MD.read_text(encoding="utf-8"), str(WIRE_MD))
CELLAR = parse_contract(CELLAR_WIRE, "CELLAR_WIRE")
SEED_FILES = {f.name for f in SEED}
CELLAR_OWN = [f for f in CELLAR if f.name not in SEED_FILES]
CELLAR_EXTENSIONS = {m.full_name: m for f in CELLAR if f.name in SEED_FILES for m in f.messages}


# --------------------------------------------------------------------------------------------------
# The generated descriptors

_SCALAR_TYPES = {
    getattr(FieldDescriptor, name): name.removeprefix("TYPE_").lower()
    for name in dir(FieldDescriptor)
    if name.startswith("TYPE_") and name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}


def module_for(wire_file: WireFile) -> ModuleType:
    return importlib.import_module(MODULES[wire_file.name])


def file_proto(file_descriptor: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    """What protoc emitted; protobuf 7's upb descriptors no longer expose syntax or labels directly."""
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    return proto


def message_descriptor(module: ModuleType, full_name: str) -> Descriptor:
    """Look a message up by its wire name, and make sure it is defined in the expected file."""
    descriptor = module.DESCRIPTOR.pool.FindMessageTypeByName(full_name)
    assert descriptor.file.name == module.DESCRIPTOR.name, f"{full_name} is defined in {descriptor.file.name}"
    return descriptor


def type_name(fd: FieldDescriptor) -> str:
    """The type as wire.md spells it: a scalar keyword or the full name of a message or enum."""
    named = fd.message_type or fd.enum_type
    return named.full_name if named is not None else _SCALAR_TYPES[fd.type]


def labels(descriptor: Descriptor) -> dict[str, str]:
    """Each field's label as it is spelled in the .proto source ("" for a plain proto3 field)."""
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    proto2 = file_proto(descriptor.file).syntax in ("", "proto2")
    result = {}
    for fp in proto.field:
        if fp.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
            result[fp.name] = "repeated"
        elif fp.label == descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED:
            result[fp.name] = "required"
        elif proto2 or fp.proto3_optional:
            result[fp.name] = "optional"
        else:
            result[fp.name] = ""
    return result


def actual_field(descriptor: Descriptor, name: str) -> WireField:
    fd = descriptor.fields_by_name.get(name)
    assert fd is not None, f"{descriptor.full_name} has no field {name!r}"
    return WireField(fd.name, fd.number, type_name(fd), labels(descriptor)[fd.name])


def _ids(items: list[Any]) -> list[str]:
    return [getattr(item, "full_name", getattr(item, "name", "?")) for item in items]


def _all(files: list[WireFile], kind: str) -> Iterator[tuple[WireFile, Any]]:
    for wire_file in files:
        for item in getattr(wire_file, kind):
            yield wire_file, item


# --------------------------------------------------------------------------------------------------
# Seed contract


def test_every_contract_file_has_a_module() -> None:
    assert {f.name for f in SEED} | {f.name for f in CELLAR} == set(MODULES)


@pytest.mark.parametrize("wire_file", SEED + CELLAR_OWN, ids=_ids(SEED + CELLAR_OWN))
def test_file_syntax_and_package(wire_file: WireFile) -> None:
    module = module_for(wire_file)
    proto = file_proto(module.DESCRIPTOR)
    assert (proto.syntax or "proto2") == wire_file.syntax
    assert module.DESCRIPTOR.package == wire_file.package
    assert module.__name__.startswith("proto."), "generated modules must live under the proto package"


@pytest.mark.parametrize("wire_file", SEED + CELLAR_OWN, ids=_ids(SEED + CELLAR_OWN))
def test_file_defines_exactly_the_contract_names(wire_file: WireFile) -> None:
    """New messages and services go to cellar.v1, never into a seed file."""
    descriptor = module_for(wire_file).DESCRIPTOR
    prefix = f"{wire_file.package}." if wire_file.package else ""

    def top_level(names: list[str]) -> set[str]:
        local = (name.removeprefix(prefix) for name in names)
        return {name for name in local if "." not in name}

    assert set(descriptor.message_types_by_name) == top_level([m.full_name for m in wire_file.messages])
    assert set(descriptor.enum_types_by_name) == top_level([e.full_name for e in wire_file.enums])
    assert set(descriptor.services_by_name) == top_level([s.full_name for s in wire_file.services])


SEED_MESSAGES = list(_all(SEED, "messages"))


@pytest.mark.parametrize(("wire_file", "message"), SEED_MESSAGES, ids=[m.full_name for _, m in SEED_MESSAGES])
def test_seed_message_fields(wire_file: WireFile, message: WireMessage) -> None:
    descriptor = message_descriptor(module_for(wire_file), message.full_name)
    for expected in message.fields:
        assert actual_field(descriptor, expected.name) == expected


@pytest.mark.parametrize(("wire_file", "message"), SEED_MESSAGES, ids=[m.full_name for _, m in SEED_MESSAGES])
def test_seed_message_additions_are_cellar_extensions(wire_file: WireFile, message: WireMessage) -> None:
    """Fields cellar added to a seed message use fresh numbers >= 10 and are exactly the pinned ones."""
    descriptor = message_descriptor(module_for(wire_file), message.full_name)
    seed_names = {f.name for f in message.fields}
    seed_numbers = {f.number for f in message.fields}
    added = [fd for fd in descriptor.fields if fd.name not in seed_names]
    for fd in added:
        assert fd.number >= FIRST_EXTENSION_NUMBER, (
            f"{fd.full_name} = {fd.number} is below {FIRST_EXTENSION_NUMBER}"
        )
        assert fd.number not in seed_numbers, f"{fd.full_name} reuses seed number {fd.number}"
    pinned = CELLAR_EXTENSIONS.get(message.full_name)
    assert {fd.name for fd in added} == ({f.name for f in pinned.fields} if pinned else set())


SEED_ENUMS = list(_all(SEED, "enums")) + list(_all(CELLAR_OWN, "enums"))


@pytest.mark.parametrize(("wire_file", "enum"), SEED_ENUMS, ids=[e.full_name for _, e in SEED_ENUMS])
def test_enum_values(wire_file: WireFile, enum: WireEnum) -> None:
    module = module_for(wire_file)
    descriptor = module.DESCRIPTOR.pool.FindEnumTypeByName(enum.full_name)
    assert descriptor.file.name == module.DESCRIPTOR.name
    assert tuple((v.name, v.number) for v in descriptor.values) == enum.values


ALL_SERVICES = list(_all(SEED, "services")) + list(_all(CELLAR_OWN, "services"))


@pytest.mark.parametrize(("wire_file", "service"), ALL_SERVICES, ids=[s.full_name for _, s in ALL_SERVICES])
def test_service_methods(wire_file: WireFile, service: WireService) -> None:
    module = module_for(wire_file)
    descriptor = module.DESCRIPTOR.pool.FindServiceByName(service.full_name)
    assert descriptor.file.name == module.DESCRIPTOR.name
    actual = [
        WireMethod(
            m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming
        )
        for m in descriptor.methods
    ]
    assert actual == service.methods


class _RecordingChannel:
    """Stands in for grpc.Channel: records the method path and call shape each stub binds."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[bool, bool]] = {}

    def _record(self, client_streaming: bool, server_streaming: bool) -> Any:
        def bind(path: str, *args: Any, **kwargs: Any) -> object:
            self.calls[path] = (client_streaming, server_streaming)
            return object()

        return bind

    def __getattr__(self, name: str) -> Any:
        shapes = {
            "unary_unary": (False, False),
            "unary_stream": (False, True),
            "stream_unary": (True, False),
            "stream_stream": (True, True),
        }
        if name not in shapes:
            raise AttributeError(name)
        return self._record(*shapes[name])


@pytest.mark.parametrize(("wire_file", "service"), ALL_SERVICES, ids=[s.full_name for _, s in ALL_SERVICES])
def test_stub_method_paths(wire_file: WireFile, service: WireService) -> None:
    """The paths on the wire (`/package.Service/Method`, `/Agent/RunJob` without a package)."""
    grpc_module = importlib.import_module(MODULES[wire_file.name] + "_grpc")
    short_name = service.full_name.rsplit(".", 1)[-1]
    channel = _RecordingChannel()
    getattr(grpc_module, f"{short_name}Stub")(channel)
    expected = {
        f"/{service.full_name}/{m.name}": (m.client_streaming, m.server_streaming) for m in service.methods
    }
    assert channel.calls == expected
    if service.methods:
        assert hasattr(grpc_module, f"add_{short_name}Servicer_to_server")


# --------------------------------------------------------------------------------------------------
# cellar's additions


CELLAR_MESSAGES = list(_all(CELLAR, "messages"))


@pytest.mark.parametrize(
    ("wire_file", "message"), CELLAR_MESSAGES, ids=[m.full_name for _, m in CELLAR_MESSAGES]
)
def test_cellar_message_fields(wire_file: WireFile, message: WireMessage) -> None:
    descriptor = message_descriptor(module_for(wire_file), message.full_name)
    for expected in message.fields:
        assert actual_field(descriptor, expected.name) == expected
    if wire_file.name not in SEED_FILES:  # cellar's own messages are pinned completely
        assert {fd.name for fd in descriptor.fields} == {f.name for f in message.fields}


def test_extension_numbers_start_at_ten() -> None:
    extensions = [f for message in CELLAR_EXTENSIONS.values() for f in message.fields]
    assert extensions, "no cellar extension fields parsed"
    assert min(f.number for f in extensions) >= FIRST_EXTENSION_NUMBER


def _fields_in_source(source: str) -> dict[tuple[str, str], list[str]]:
    """(message path, field name) -> the comment lines right above the field's declaration."""
    opener = re.compile(r"^(message|enum|service|oneof)\s+(\w+)\s*\{\s*(\})?$")
    declaration = re.compile(
        r"^(?:optional\s+|repeated\s+|required\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+\s*;"
    )
    stack: list[str] = []
    comments: list[str] = []
    found: dict[tuple[str, str], list[str]] = {}
    for raw in source.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            comments.append(line)
            continue
        if m := opener.match(line):
            if not m.group(3):
                stack.append(m.group(2))
        elif line == "}":
            stack.pop()
        elif (m := declaration.match(line)) and stack:
            found[(".".join(stack), m.group(1))] = comments
        comments = []
    return found


@pytest.mark.parametrize("full_name", sorted(CELLAR_EXTENSIONS))
def test_extension_fields_are_marked_in_the_source(full_name: str) -> None:
    """A reader of a seed .proto must see at a glance which fields are cellar's, not the seed's."""
    message = CELLAR_EXTENSIONS[full_name]
    wire_file = next(f for f in CELLAR if message in f.messages)
    source_path = REPO_ROOT / module_for(wire_file).DESCRIPTOR.name
    fields = _fields_in_source(source_path.read_text(encoding="utf-8"))
    local_name = full_name.removeprefix(f"{wire_file.package}.")
    for f in message.fields:
        comments = fields.get((local_name, f.name))
        assert comments is not None, f"{local_name}.{f.name} not found in {source_path}"
        assert any("cellar extension" in c for c in comments), (
            f"{local_name}.{f.name} lacks '// cellar extension'"
        )
