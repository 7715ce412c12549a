// qcowfs: moves virtual disks in and out of hosts in qcow2 format.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <system_error>

#include "cli/exit_codes.h"
#include "cli/inspect_commands.h"
#include "cli/mount_command.h"
#include "cli/serve_command.h"
#include "cli/stream_command.h"
#include "qcow/export/export_stream.h"
#include "qcow/format/errors.h"

#ifndef QCOWFS_VERSION
#define QCOWFS_VERSION "0"
#endif

int main(int argc, char** argv) {
  CLI::App app("qcowfs: present disks as qcow2 files and decode qcow2 images into disks", "qcowfs");
  app.set_version_flag("--version", QCOWFS_VERSION);
  app.require_subcommand(1);
  int exit_code = qcowfs::kExitOk;
  qcowfs::AddMountCommand(app, &exit_code);
  qcowfs::AddStreamCommand(app, &exit_code);
  qcowfs::AddServeCommands(app, &exit_code);
  qcowfs::AddInspectCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "qcowfs: error: %s (see qcowfs --help)\n", e.what());
    return qcowfs::kExitUsage;
  } catch (const qcow::UsageError& e) {
    std::fprintf(stderr, "qcowfs: error: %s\n", e.what());
    return qcowfs::kExitUsage;
  } catch (const qcow::FormatError& e) {
    std::fprintf(stderr, "qcowfs: error: %s\n", e.what());
    return qcowfs::kExitFormat;
  } catch (const qcow::PeerClosedError& e) {
    std::fprintf(stderr, "qcowfs: error: %s\n", e.what());
    return qcowfs::kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qcowfs: error: %s\n", e.what());
    return qcowfs::kExitFailure;
  }
  return exit_code;
}
