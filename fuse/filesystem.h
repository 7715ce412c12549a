// The FUSE low-level filesystem: a root directory holding the exported image and/or the
// import files. Every callback lives in filesystem.cc and ends in one helper that maps
// exceptions to an errno.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <string>

#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"
#include "qcow/import/import_job.h"

namespace qcowfs {

// What a mount serves; everything pointed to outlives the session.
struct MountedFiles {
  // The export (when layout is set): a read-only image named export_name.
  std::string export_name = "disk.qcow2";
  const qcow::ExportLayout* layout = nullptr;  // bytes of the image
  const qcow::Source* source = nullptr;        // where data clusters are read from
  // The import (when set): import.qcow2 takes an image, import.status reports on it.
  qcow::ImportJob* import = nullptr;
  std::string import_target;  // for log lines
  uid_t import_uid = 0;       // the target's owner: import.qcow2 and import.status carry it
  gid_t import_gid = 0;
  timespec mount_time{};
};

// Names of the import files in the mount root.
inline constexpr const char* kImportName = "import.qcow2";
inline constexpr const char* kStatusName = "import.status";

// Returns the largest read request (bytes) whose reply libfuse can splice through the
// biggest pipe this process may create; the mount asks the kernel for requests this size.
size_t RequestSizeForPipe();

// Returns the low-level operations; their userdata must be a MountedFiles*.
const fuse_lowlevel_ops& Operations();

}  // namespace qcowfs
