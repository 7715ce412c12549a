// The inspection subcommands: `info`, `check`, `map` and xapi's `read_headers`. Each returns the
// exit status.
#pragma once

#include <string>

#include "cli/export_plan.h"

namespace qcowfs {

// Prints a qcow2 image's header, features and sizes, or a VHD's footer, header, allocation
// and parent chain (text or JSON), reading only their tables. `search_path` is --path,
// `source_format` --source-format ("" decides as an export does: format_policy.h).
int RunInfo(const std::string& path, const std::string& search_path,
            const std::string& source_format, bool json);

// Runs the import decoder's checks over an image without writing anything (as an import
// with --delta would, with `delta`).
int RunCheck(const std::string& path, bool delta);

// Lists the extents an export of the source would hold.
int RunMap(const std::string& source, const ExportArgs& args, bool json);

// Prints, as xapi's qcow-stream-tool `read_headers` does, the JSON
// {"virtual_size": N, "cluster_bits": B, "data_clusters": [i, ...]} of the qcow2 image at
// path: the guest clusters (of its cluster size) that it or its backing chain holds data
// in, ascending.
int RunReadHeaders(const std::string& path, const std::string& search_path);

}  // namespace qcowfs
