// xapi's export of a VDI as qcow2: the command line of QEMU's qcow2-to-stdout.py as XCP-ng's
// xapi runs it (qcow_to_stdout in xapi.conf), the image on standard output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace qcowfs {

struct Qcow2ToStdoutArgs {
  std::string program = "qcowfs";            // the name messages start with
  std::string input;                         // the VDI's device (its guest bytes, read raw)
  std::string diff;                          // --diff BASE: only what differs from BASE
  std::string changed_blocks;                // --changed-blocks: a CBT delta (file or fd:N)
  std::string backing_name, backing_format;  // what that delta names as its backing file
  std::optional<std::string> cluster_size;   // -c BYTES, as typed
  uint32_t refcount_bits = 16;               // -r BITS (only 16)
  bool data_file = false;                    // -d / -R: refused (no external data files)
  bool data_file_raw = false;
  // Allocation hints, so that only clusters holding data are read: qemu-img map and info
  // --output=json of the VDI's qcow2 file on descriptors (as xapi passes them), or the JSON
  // {virtual_size, cluster_bits, data_clusters} on stdin (--json-header) or a descriptor.
  bool json_header = false;
  // Descriptor numbers as typed (xapi may leave a placeholder that is not a number).
  std::optional<std::string> json_header_diff;
  std::optional<std::string> map_fd, info_fd, diff_map_fd, diff_info_fd;
};

// Writes the image to standard output; returns the exit status. Throws UsageError,
// FormatError (a JSON hint that cannot be used or describes another disk) and
// std::system_error.
int RunQcow2ToStdout(const Qcow2ToStdoutArgs& args);

}  // namespace qcowfs
