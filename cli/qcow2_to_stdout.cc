#include "cli/qcow2_to_stdout.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <memory>

#include "cli/durable_output.h"
#include "cli/endpoint.h"
#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/inherited_fds.h"
#include "cli/stop_signals.h"
#include "qcow/export/export_layout.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/io/disk_lock.h"
#include "qcow/sources/allocation_map.h"
#include "qcow/sources/changed_blocks.h"
#include "qcow/sources/delta.h"
#include "qcow/sources/raw_source.h"

namespace qcowfs {
namespace {

// What the JSON hints say of one disk.
struct Hint {
  std::optional<qcow::DataRanges> data;  // where it holds data
  std::optional<uint32_t> cluster_bits;  // its qcow2 cluster size
  std::optional<uint64_t> size;          // its virtual size (qemu-img info)
  std::string name;                      // where the allocation came from, for messages
  std::string size_name;                 // where the size came from
};

// Returns the descriptor an option names, or nullopt (with a warning) for a value that is
// not a number: xapi leaves its placeholder there when it has no pipe to pass.
std::optional<int> Descriptor(const std::string& program, const std::string& option,
                              const std::optional<std::string>& value) {
  if (!value) return std::nullopt;
  int fd = -1;
  const char* end = value->data() + value->size();
  const auto [stop, ec] = std::from_chars(value->data(), end, fd);
  if (value->empty() || ec != std::errc() || stop != end || fd < 0) {
    std::fprintf(stderr,
                 "%s: warning: ignoring %s '%s': not a descriptor number (the disk is read "
                 "instead)\n",
                 program.c_str(), option.c_str(), value->c_str());
    return std::nullopt;
  }
  return RequireInherited(fd, option + " " + *value);
}

// A descriptor JSON is read from, as an option gave it.
struct HintFd {
  std::optional<int> fd;  // nullopt: not given, or xapi's placeholder
  std::string name;       // the option and its value: "--json-header-map 5"
};

// Returns the descriptor `option` names (Descriptor).
HintFd ParseHintFd(const std::string& program, const std::string& option,
                   const std::optional<std::string>& value) {
  return {Descriptor(program, option, value), value ? option + " " + *value : option};
}

// Reads the hints of a disk of disk_size bytes: qemu-img map and info JSON on descriptors,
// or the read_headers JSON on `header`, each read no further than that size allows.
Hint ReadHint(const std::string& prefix, const HintFd& map, const HintFd& info_json,
              const HintFd& header, uint64_t disk_size) {
  Hint h;
  if (header.fd && (map.fd || info_json.fd)) {
    throw qcow::UsageError("give " + header.name + " or " + prefix + "-map/-info, not both");
  }
  if (map.fd) {
    h.name = map.name;
    h.data = qcow::ParseQemuImgMap(qcow::PullFromFd(*map.fd, "fd:" + std::to_string(*map.fd)),
                                   h.name, disk_size);
  }
  if (info_json.fd) {
    const std::string& name = info_json.name;
    const qcow::ImageSummary info = qcow::ParseQemuImgInfo(
        qcow::PullFromFd(*info_json.fd, "fd:" + std::to_string(*info_json.fd)), name);
    h.size = info.virtual_size;
    h.size_name = name;
    h.cluster_bits = info.cluster_bits;
  }
  if (header.fd) {
    h.name = header.name;
    qcow::ClusterHeader parsed =
        qcow::ParseClusterHeader(qcow::PullFromFd(*header.fd, header.name), header.name, disk_size);
    h.cluster_bits = parsed.cluster_bits;
    h.size = parsed.data.size;
    h.size_name = header.name;
    h.data = std::move(parsed.data);
  }
  return h;
}

// Returns the disk (opened raw) with the allocation its hint gives, checking the hint is
// about it.
std::unique_ptr<qcow::Source> WithHint(std::unique_ptr<qcow::Source> disk, const std::string& path,
                                       Hint& hint) {
  auto check = [&](const std::string& name, uint64_t described) {
    if (!qcow::DescribesDiskOf(described, disk->size())) {
      throw qcow::FormatError(name + " describes a disk of " + std::to_string(described) +
                              " bytes, but " + path + " is " + std::to_string(disk->size()) +
                              " bytes");
    }
  };
  if (hint.size) check(hint.size_name, *hint.size);
  if (hint.data) {
    check(hint.name, hint.data->size);
    disk = qcow::WithAllocation(std::move(disk), std::move(*hint.data), hint.name);
  }
  return disk;
}

// Returns the cluster bits -c asks for, as qcow2-to-stdout.py takes it: decimal bytes.
uint32_t ClusterBitsArg(const std::string& text) {
  uint64_t size = 0;
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, size);
  const std::optional<uint32_t> bits =
      ec == std::errc() && stop == end ? qcow::ClusterBitsOf(size) : std::nullopt;
  if (!bits) {
    throw qcow::UsageError("-c " + text +
                           ": the cluster size is a power of two from 512 to 2097152 bytes");
  }
  return *bits;
}

// Throws UsageError when stdout is `read`, a file or device read as `what` (`1<>DEV` opens
// it without truncating): the image would be written over what it is read from.
void RefuseStdoutOver(const struct stat& read, const std::string& what) {
  struct stat out;
  if ((S_ISREG(read.st_mode) || S_ISBLK(read.st_mode)) && ::fstat(STDOUT_FILENO, &out) == 0 &&
      qcow::SameDisk(out, read)) {
    throw qcow::UsageError("stdout is " + what + qcow::SameDiskNote(out, read) +
                           "; refusing to write the image over it");
  }
}

// The same for the disk at path.
void RefuseStdoutOver(const std::string& path, const std::string& role) {
  struct stat disk;
  if (::stat(path.c_str(), &disk) == 0) RefuseStdoutOver(disk, path + ", " + role);
}

// The same for the file a JSON descriptor reads.
void RefuseStdoutOver(const HintFd& hint) {
  struct stat st;
  if (hint.fd && ::fstat(*hint.fd, &st) == 0) RefuseStdoutOver(st, "what " + hint.name + " reads");
}

}  // namespace

int RunQcow2ToStdout(const Qcow2ToStdoutArgs& a) {
  if (a.data_file || a.data_file_raw) {
    throw qcow::UsageError(
        "-d/-R (an external data file) is not supported: qcowfs writes the data into the "
        "image");
  }
  if (a.refcount_bits != 16) {
    throw qcow::UsageError("-r " + std::to_string(a.refcount_bits) +
                           ": qcowfs writes 16-bit refcounts only");
  }
  const bool has_diff_hint = a.json_header_diff || a.diff_map_fd || a.diff_info_fd;
  if (a.diff.empty() && has_diff_hint) {
    throw qcow::UsageError("--json-header-diff* describe the --diff base; give --diff BASE");
  }
  if (!a.changed_blocks.empty() && !a.diff.empty()) {
    throw qcow::UsageError(
        "--changed-blocks and --diff do not go together: the bitmap says what changed "
        "since the base already");
  }
  if (a.changed_blocks.empty() && (!a.backing_name.empty() || !a.backing_format.empty())) {
    throw qcow::UsageError("--backing-name and --backing-format need --changed-blocks");
  }
  if (!a.changed_blocks.empty() && a.backing_name.empty()) {
    throw qcow::UsageError(
        "--changed-blocks needs --backing-name: the delta must name the disk it applies "
        "over");
  }
  if (::isatty(STDOUT_FILENO)) {
    throw qcow::UsageError("refusing to write a qcow2 image to a terminal; redirect stdout");
  }
  const HintFd map = ParseHintFd(a.program, "--json-header-map", a.map_fd);
  const HintFd info = ParseHintFd(a.program, "--json-header-info", a.info_fd);
  const HintFd header = {a.json_header ? std::optional<int>(STDIN_FILENO) : std::nullopt,
                         "--json-header (stdin)"};
  const HintFd diff_map = ParseHintFd(a.program, "--json-header-diff-map", a.diff_map_fd);
  const HintFd diff_info = ParseHintFd(a.program, "--json-header-diff-info", a.diff_info_fd);
  const HintFd diff_header = {Descriptor(a.program, "--json-header-diff", a.json_header_diff),
                              "--json-header-diff"};
  RefuseStdoutOver(a.input, "the disk being exported");
  if (!a.diff.empty()) RefuseStdoutOver(a.diff, "the --diff base");
  if (!a.changed_blocks.empty()) RefuseStdoutOver(a.changed_blocks, "the --changed-blocks bitmap");
  for (const HintFd* hint : {&map, &info, &header, &diff_map, &diff_info, &diff_header}) {
    RefuseStdoutOver(*hint);
  }
  // A file or device on stdout is written: another process's import or export of it keeps
  // it as it is.
  const std::vector<qcow::UniqueFd> stdout_lock = LockPassedFile(STDOUT_FILENO, "stdout");
  // The disks are opened before their hints are read, so that their sizes bound the reading.
  std::unique_ptr<qcow::Source> source = qcow::OpenRawSource(a.input, false);
  Hint top = ReadHint("--json-header", map, info, header, source->size());
  source = WithHint(std::move(source), a.input, top);
  const uint32_t bits =
      a.cluster_size ? ClusterBitsArg(*a.cluster_size) : top.cluster_bits.value_or(16);

  qcow::ClusterMap data;
  qcow::DeltaOptions delta;
  if (!a.changed_blocks.empty()) {
    // As with --diff, every changed cluster is a data cluster (zeros where the disk reads
    // as zeros): the importers of this image know no zero clusters.
    // (No walk of the disk's allocation: every changed cluster is data either way.)
    data = qcow::ChangedClusters(ReadChangedBlocksArg(a.changed_blocks, source->size()), bits);
    delta.backing_file = a.backing_name;
    delta.backing_format = BackingFormatArg(a.backing_format, "", a.backing_name);
  } else if (!a.diff.empty()) {
    std::unique_ptr<qcow::Source> base = qcow::OpenRawSource(a.diff, false);
    Hint base_hint = ReadHint("--json-header-diff", diff_map, diff_info, diff_header, base->size());
    base = WithHint(std::move(base), a.diff, base_hint);
    // Every cluster either disk may hold data in is compared; a cluster that now reads as
    // zeros over base data is exported as a data cluster of zeros, as the importers that
    // take this image (xapi's qcow-stream-tool among them) know no zero clusters.
    qcow::DeltaPlan plan = qcow::ComparedDelta(*source, *base, bits, nullptr);
    data = qcow::ClusterMap::Union(plan.data, plan.delta.zero);
  } else {
    data = source->Allocation(bits);
    if (!top.data) data = qcow::DropZeroClusters(*source, data, bits, nullptr);
  }
  const qcow::ExportLayout layout(source->size(), bits, std::move(data),
                                  delta.backing_file.empty() ? nullptr : &delta);
  // A reader that goes away must give EPIPE and a message, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  WriteDestination(STDOUT_FILENO, "stdout",
                   [&] { qcow::WriteExport(layout, *source, STDOUT_FILENO, {}, StopFd()); });
  return kExitOk;
}

}  // namespace qcowfs
