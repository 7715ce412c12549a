// The command line: every subcommand and option, and how errors map to exit statuses.
// The only file that includes CLI11 (a header-only library that is slow to compile).
#include "cli/command_line.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string_view>
#include <system_error>

#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/inspect_commands.h"
#include "cli/mount_command.h"
#include "cli/progress.h"
#include "cli/qcow2_to_stdout.h"
#include "cli/serve_command.h"
#include "cli/spool_options.h"
#include "cli/stop_signals.h"
#include "cli/stream_command.h"
#include "cli/xapi_options.h"
#include "qcow/format/errors.h"
#include "qcow/io/wait_io.h"

#ifndef QCOWFS_VERSION
#define QCOWFS_VERSION "0"
#endif

namespace qcowfs {
namespace {

void AddSpoolOptions(CLI::App* cmd, SpoolArgs& a) {
  cmd->add_option("--spool-memory", a.memory,
                  "Import: memory for image bytes that arrive before the tables that map them")
      ->capture_default_str();
  cmd->add_option("--spool-dir", a.dir,
                  "Import: directory for spooled bytes beyond --spool-memory (default: $TMPDIR "
                  "or /tmp)");
  cmd->add_option("--spool-limit", a.limit,
                  "Import: most bytes ever spooled; an image needing more fails")
      ->capture_default_str();
  cmd->add_option("--decompress-threads", a.decompress_threads,
                  "Import: threads that decompress compressed clusters (default 0: one per "
                  "CPU the process may run on, see taskset)")
      ->check(CLI::Range(0u, 256u));
}

// The exporting command (stream) takes --source-format and --path as export options.
void AddXapiOptions(CLI::App* cmd, XapiArgs& a, bool exporting) {
  cmd->add_option("--source-protocol", a.source_protocol,
                  "xapi compatibility: only 'none' (read the source directly)");
  cmd->add_option("--destination-protocol", a.destination_protocol,
                  "xapi compatibility: only 'none' (write the destination directly)");
  if (!exporting) {
    cmd->add_option("--source-format", a.source_format, "xapi compatibility: only 'qcow2'");
  }
  cmd->add_option("--destination-format", a.destination_format,
                  "xapi compatibility: 'qcow2' for stream, 'raw' for serve");
  cmd->add_option("--tar-filename-prefix", a.tar_filename_prefix,
                  "xapi compatibility: accepted, no effect (no tar protocol)");
  if (!exporting) cmd->add_option("--path", a.path, "xapi compatibility: accepted, no effect");
  if (!exporting) cmd->add_option("--relative-to", a.relative_to, "xapi compatibility: refused");
}

void AddExportOptions(CLI::App* cmd, ExportArgs& a) {
  cmd->add_option("--cluster-size", a.cluster_size,
                  "qcow2 cluster size, a power of two from 512 to 2M")
      ->capture_default_str();
  cmd->add_flag("--scan-zeros", a.scan_zeros,
                "Read the disk once first and leave all-zero clusters out (progress on stderr)");
  cmd->add_flag("--direct", a.direct,
                "Read a raw disk with O_DIRECT, bypassing the page cache (qcow2 layers are "
                "read through it)");
  cmd->add_option("--source-format", a.source_format,
                  "raw, qcow2, vhd, or hybrid with --source DEVICE:METADATA (default: by the "
                  "file's name, .qcow2, .vhd or .raw; a block device or a file whose name says "
                  "nothing is raw, and such a file that looks like an image is refused)");
  cmd->add_option("--allocation-from", a.allocation_from,
                  "Export only the clusters this metadata says hold data (a qcow2 image or a "
                  "VHD with its chain, or qemu-img map --output=json in a file or fd:N), "
                  "reading them from the disk");
  cmd->add_option("--relative-to", a.relative_to,
                  "Export a delta over this disk: a layer of the source's chain (only what the "
                  "layers above it changed), or any disk of the same size (contents compared "
                  "at start, progress on stderr); the image names it as its backing file");
  cmd->add_option("--changed-blocks", a.changed_blocks,
                  "Export a delta of the clusters holding a changed block of this CBT bitmap "
                  "(xapi's VDI.list_changed_blocks: base64 text or the raw bits, in a file or "
                  "fd:N), read from the source, over the disk --backing-name names");
  cmd->add_option("--backing-name", a.backing_name,
                  "With --relative-to: the backing file name the delta writes (default: the "
                  "chain's own name for the base, or the path given); required with "
                  "--changed-blocks");
  cmd->add_option("--backing-format", a.backing_format,
                  "With --relative-to or --changed-blocks: the backing file's format the delta "
                  "names, raw, qcow2 or vpc (default: the base's own; with --changed-blocks, "
                  "by --backing-name's extension, .qcow2 or .vhd, else raw)");
  cmd->add_option("--path", a.search_path,
                  "Directories (colon-separated) searched, by file name, for backing files and "
                  "VHD parents that are not where the image's backing name or parent locators "
                  "point");
}

void AddProgressOptions(CLI::App* cmd, ProgressArgs& a) {
  cmd->add_flag("--progress", a.enabled, "Show progress: a bar on stderr when it is a terminal");
  cmd->add_flag("--machine", a.machine,
                "With --progress: print the percentage as three digits each time it changes, "
                "ending with 100, on stdout or --progress-fd");
  cmd->add_option("--progress-fd", a.fd, "Descriptor for --progress --machine output");
}

void AddServeOptions(CLI::App* cmd, ServeArgs& a) {
  cmd->add_option("--destination-size", a.destination_size,
                  "Bytes of image on the input (xapi passes the HTTP Content-Length): read "
                  "exactly this many, then finish");
  cmd->add_flag("--prezeroed", a.prezeroed,
                "The target already reads as zeros: skip zeroing unallocated ranges");
  cmd->add_flag("--delta", a.delta,
                "The image may have a backing file whose disk the target holds already: "
                "apply it (data written, zero clusters zeroed, unallocated ranges untouched; "
                "--prezeroed is ignored)");
  cmd->add_flag("--direct", a.direct,
                "xapi compatibility: accepted; the target is always fsynced before success");
  cmd->add_option("--idle-timeout", a.idle_timeout,
                  "Fail when no byte of the image arrives for this many seconds (0: wait "
                  "forever)")
      ->check(CLI::Range(0u, 2'000'000u))
      ->capture_default_str();
  AddProgressOptions(cmd, a.progress);
  AddSpoolOptions(cmd, a.spool);
}

void AddMountCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<MountArgs>();
  CLI::App* cmd = app.add_subcommand(
      "mount",
      "Mount a directory that presents a disk as a read-only qcow2 file (--export) and/or "
      "decodes qcow2 images written into it into a disk (--import)");
  cmd->footer(
      "Files in the mount:\n"
      "  disk.qcow2     (--export) the disk as a qcow2 image, computed on the fly\n"
      "  import.qcow2   (--import) write a qcow2 image here (cat, cp, dd); close() returns 0\n"
      "                 only once it is decoded, written and fsynced, else EIO, or EFBIG\n"
      "                 when the image is larger than the target\n"
      "  import.status  (--import) state, bytes received and written, virtual size, error\n"
      "Unmount with fusermount3 -u MOUNTPOINT. Exit status: 0 mounted, 1 failure, 2 usage.");
  cmd->add_option("--export", args->export_source,
                  "Disk to present as MOUNTPOINT/disk.qcow2 (raw regular file or block "
                  "device, a qcow2 image with its backing chain, or a VHD with its parents), "
                  "opened read-only");
  cmd->add_option("--import", args->import_target,
                  "Disk to decode images written to MOUNTPOINT/import.qcow2 into (raw regular "
                  "file or block device, at least the image's virtual size)");
  cmd->add_option("mountpoint", args->mountpoint, "Existing directory to mount on")->required();
  cmd->add_flag("-f,--foreground", args->foreground,
                "Stay in the foreground and log to stderr (default: daemon logging to syslog)");
  cmd->add_option("-o", args->fuse_options,
                  "FUSE mount options, comma-separated (e.g. allow_other); repeatable");
  cmd->add_option("--export-name", args->export_name, "Name of the image file in the mount")
      ->capture_default_str();
  AddExportOptions(cmd, args->export_args);
  cmd->add_option("--readahead", args->readahead_kb,
                  "Kernel readahead for the mount in KiB (default: two read requests)");
  cmd->add_flag("--prezeroed", args->prezeroed,
                "Import: the target already reads as zeros, so unallocated ranges are skipped");
  cmd->add_flag("--delta", args->delta,
                "Import: images may have a backing file whose disk the target holds already: "
                "apply them (data written, zero clusters zeroed, unallocated ranges "
                "untouched; --prezeroed is ignored)");
  AddSpoolOptions(cmd, args->spool);
  cmd->add_option("--threads", args->threads, "Maximum threads serving requests")
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  cmd->callback([args, exit_code] { *exit_code = RunMount(*args); });
}

void AddStreamCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<StreamArgs>();
  CLI::App* cmd = app.add_subcommand(
      "stream",
      "Write a disk as a qcow2 image (the bytes the mount's disk.qcow2 shows) to a "
      "socket, pipe, file or descriptor");
  cmd->add_option("--source", a->source,
                  "Disk to export (raw regular file or block device, or a qcow2 image or VHD with "
                  "its backing chain)")
      ->required();
  cmd->add_option("--destination", a->destination,
                  "Where the image goes: - or stdout:, fd:N, tcp:HOST:PORT, unix:PATH, "
                  "file:///PATH or a path, null:");
  cmd->add_option("--destination-fd", a->destination_fd, "Write the image to this descriptor");
  AddExportOptions(cmd, a->export_args);
  AddProgressOptions(cmd, a->progress);
  AddXapiOptions(cmd, a->xapi, true);
  cmd->callback([a, exit_code] { *exit_code = RunStream(*a); });
}

void AddServeCommands(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Decode a qcow2 image read from a socket, pipe, file or descriptor into a disk");
  cmd->add_option("--source", a->source,
                  "Where the image comes from: - or stdin: (default), fd:N, tcp:HOST:PORT "
                  "(listen, accept one), unix:PATH (listen, accept one), or a file");
  cmd->add_option("--source-fd", a->source_fd, "Read the image from this descriptor");
  cmd->add_option("--destination", a->destination,
                  "Target disk: file:///PATH, a path, or a block device")
      ->required();
  AddServeOptions(cmd, *a);
  AddXapiOptions(cmd, a->xapi, false);
  cmd->callback([a, exit_code] { *exit_code = RunServe(*a); });

  auto d = std::make_shared<ServeArgs>();
  d->keep_unallocated = true;
  CLI::App* decode = app.add_subcommand(
      "stream_decode",
      "Decode a qcow2 image from stdin into TARGET as XCP-ng's qcow2 importer does: data and "
      "zero clusters written, ranges the image leaves unallocated untouched (a new VDI reads "
      "as zeros there; a diff export applies onto a copy of its base), a backing file "
      "allowed; otherwise as serve --source - --destination TARGET");
  decode->add_option("target", d->destination, "Target disk")->required();
  AddServeOptions(decode, *d);
  decode->callback([d, exit_code] { *exit_code = RunServe(*d); });
}

void AddInspectCommands(CLI::App& app, int* exit_code) {
  auto info_path = std::make_shared<std::string>();
  auto info_json = std::make_shared<bool>(false);
  CLI::App* info = app.add_subcommand(
      "info",
      "Show a qcow2 image's header, features, sizes and any problem that would stop "
      "its import, or a VHD's type, sizes, allocation and parent chain");
  auto info_search = std::make_shared<std::string>();
  info->add_option("image", *info_path, "qcow2 image or VHD (file or block device)")->required();
  info->add_flag("--json", *info_json, "Print JSON");
  info->add_option("--path", *info_search,
                   "Directories (colon-separated) searched, by file name, for backing files "
                   "and VHD parents");
  auto info_format = std::make_shared<std::string>();
  info->add_option("--source-format", *info_format,
                   "qcow2, vhd or raw (default: by the file's name, .qcow2 or .vhd; a block "
                   "device or a file whose name says nothing is raw)");
  info->callback([=] { *exit_code = RunInfo(*info_path, *info_search, *info_format, *info_json); });

  auto rh_path = std::make_shared<std::string>();
  auto rh_search = std::make_shared<std::string>();
  CLI::App* rh = app.add_subcommand(
      "read_headers",
      "Print the JSON xapi's qcow-stream-tool read_headers prints for a qcow2 image: "
      "{\"virtual_size\", \"cluster_bits\", \"data_clusters\": [guest cluster indices "
      "holding data in the image or its backing chain]}");
  rh->add_option("image", *rh_path, "qcow2 image file")->required();
  rh->add_option("--path", *rh_search,
                 "Directories (colon-separated) searched, by file name, for backing files");
  rh->callback([=] { *exit_code = RunReadHeaders(*rh_path, *rh_search); });

  auto check_path = std::make_shared<std::string>();
  CLI::App* check = app.add_subcommand(
      "check",
      "Run the import decoder's checks over a qcow2 image without writing anything; "
      "exit 0 if it would import");
  auto check_delta = std::make_shared<bool>(false);
  check->add_option("image", *check_path, "qcow2 image file")->required();
  check->add_flag("--delta", *check_delta,
                  "Check it as an import with --delta would take it (a backing file allowed)");
  check->callback([=] { *exit_code = RunCheck(*check_path, *check_delta); });

  auto map_source = std::make_shared<std::string>();
  auto map_json = std::make_shared<bool>(false);
  auto map_args = std::make_shared<ExportArgs>();
  CLI::App* map = app.add_subcommand(
      "map",
      "List the extents qcowfs would export from a disk, like qemu-img map of the "
      "exported image");
  map->add_option("source", *map_source,
                  "Disk (raw regular file or block device, or a qcow2 image or VHD with its chain)")
      ->required();
  map->add_flag("--json", *map_json, "Print JSON in the style of qemu-img map --output=json");
  AddExportOptions(map, *map_args);
  map->callback([=] { *exit_code = RunMap(*map_source, *map_args, *map_json); });
}

// The options of QEMU's qcow2-to-stdout.py as xapi ships and runs it.
void AddQcow2ToStdoutOptions(CLI::App* cmd, Qcow2ToStdoutArgs& a) {
  cmd->add_option("input_file", a.input, "The disk (read raw: a VDI's device, or a file)")
      ->required();
  cmd->add_option("--diff", a.diff,
                  "Export only the clusters whose bytes differ from this disk's (read raw)");
  cmd->add_option("--changed-blocks", a.changed_blocks,
                  "Export a delta of the clusters holding a changed block of this CBT bitmap "
                  "(base64 text or the raw bits, in a file or fd:N) over --backing-name");
  cmd->add_option("--backing-name", a.backing_name,
                  "With --changed-blocks: the backing file name the delta writes (required)");
  cmd->add_option("--backing-format", a.backing_format,
                  "With --changed-blocks: raw, qcow2 or vpc (default: by --backing-name's "
                  "extension, .qcow2 or .vhd, else raw)");
  cmd->add_option("-c", a.cluster_size,
                  "qcow2 cluster size in bytes (default: the JSON header's, else 65536)");
  cmd->add_option("-r", a.refcount_bits, "Refcount width: 16 only")->capture_default_str();
  cmd->add_flag("-d", a.data_file, "External data file: refused");
  cmd->add_flag("-R", a.data_file_raw, "External raw data file: refused");
  cmd->add_flag("--json-header", a.json_header,
                "stdin holds {\"virtual_size\", \"cluster_bits\", \"data_clusters\"} of "
                "the disk (clusters as indices or [first, last] pairs)");
  cmd->add_option("--json-header-diff", a.json_header_diff,
                  "Descriptor holding that JSON for the --diff disk");
  cmd->add_option("--json-header-map", a.map_fd,
                  "Descriptor holding qemu-img map --output=json of the disk's qcow2 file");
  cmd->add_option("--json-header-info", a.info_fd,
                  "Descriptor holding qemu-img info --output=json of the disk's qcow2 file");
  cmd->add_option("--json-header-diff-map", a.diff_map_fd,
                  "Descriptor holding qemu-img map --output=json of the --diff disk's qcow2");
  cmd->add_option("--json-header-diff-info", a.diff_info_fd,
                  "Descriptor holding qemu-img info --output=json of the --diff disk's qcow2");
}

constexpr const char* kQcow2ToStdoutAbout =
    "Write a disk as a qcow2 image to standard output, as xapi runs QEMU's qcow2-to-stdout: "
    "only the clusters the JSON headers say hold data are read (all non-zero clusters "
    "without them), or with --diff only those that differ from the base";

void AddQcow2ToStdoutCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<Qcow2ToStdoutArgs>();
  CLI::App* cmd = app.add_subcommand("qcow2-to-stdout", kQcow2ToStdoutAbout);
  AddQcow2ToStdoutOptions(cmd, *a);
  cmd->callback([a, exit_code] { *exit_code = RunQcow2ToStdout(*a); });
}

// The exit status for an error that ended a command.
int ExitCodeFor(const std::exception& e) {
  if (dynamic_cast<const qcow::UsageError*>(&e)) return kExitUsage;
  if (dynamic_cast<const qcow::FormatError*>(&e)) return kExitFormat;
  return kExitFailure;
}

// Run as qcow2-to-stdout (a link to qcowfs under that name, which xapi's qcow_to_stdout
// setting can name): that tool's command line alone.
bool CalledAsQcow2ToStdout(const char* argv0) {
  std::string_view name = argv0 ? argv0 : "";
  if (const size_t slash = name.rfind('/'); slash != std::string_view::npos) {
    name.remove_prefix(slash + 1);
  }
  return name == "qcow2-to-stdout" || name == "qcow2-to-stdout.py";
}

}  // namespace

int RunCommandLine(int argc, char** argv) {
  const bool qcow2_to_stdout = argc > 0 && CalledAsQcow2ToStdout(argv[0]);
  CLI::App app(qcow2_to_stdout
                   ? kQcow2ToStdoutAbout
                   : "qcowfs: present disks as qcow2 files and decode qcow2 images into disks",
               qcow2_to_stdout ? "qcow2-to-stdout" : "qcowfs");
  app.set_version_flag(
      "--version",
      std::string(qcow2_to_stdout ? "qcow2-to-stdout (qcowfs) " : "qcowfs ") + QCOWFS_VERSION);
  int exit_code = kExitOk;
  auto direct = std::make_shared<Qcow2ToStdoutArgs>();
  direct->program = "qcow2-to-stdout";
  if (qcow2_to_stdout) {
    AddQcow2ToStdoutOptions(&app, *direct);
    app.callback([direct, &exit_code] { exit_code = RunQcow2ToStdout(*direct); });
  } else {
    app.require_subcommand(1);
    AddMountCommand(app, &exit_code);
    AddStreamCommand(app, &exit_code);
    AddServeCommands(app, &exit_code);
    AddInspectCommands(app, &exit_code);
    AddQcow2ToStdoutCommand(app, &exit_code);
    for (CLI::App* sub : app.get_subcommands({})) {
      sub->set_version_flag("--version", std::string("qcowfs ") + QCOWFS_VERSION);
    }
  }
  const char* prog = qcow2_to_stdout ? "qcow2-to-stdout" : "qcowfs";
  SetProgramName(prog);
  if (!qcow2_to_stdout && argc > 1 && argv[1][0] != '-') {
    const std::vector<CLI::App*> subs = app.get_subcommands({});
    if (std::none_of(subs.begin(), subs.end(),
                     [&](const CLI::App* s) { return s->get_name() == argv[1]; })) {
      PrintFinalError(std::string("unknown command '") + argv[1] + "' (see qcowfs --help)",
                      kExitUsage);
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Point at the help of the subcommand the error is in.
    std::string help = prog;
    for (const CLI::App* sub : app.get_subcommands()) help += " " + sub->get_name();
    PrintFinalError(std::string(e.what()) + " (see " + help + " --help)", kExitUsage);
    return kExitUsage;
  } catch (const qcow::Interrupted& e) {
    // Work a stop signal cut short: what() says how far it got.
    PrintFinalError(InterruptedBySignal() + " " + e.what(), kExitFailure);
    return kExitFailure;
  } catch (const std::exception& e) {
    PrintFinalError(e.what(), ExitCodeFor(e));
    return ExitCodeFor(e);
  }
  return exit_code;
}

}  // namespace qcowfs
