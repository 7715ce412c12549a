// The FUSE low-level filesystem: a root directory holding the exported image. Every
// callback lives in export_fs.cc and ends in one helper that maps exceptions to an errno.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <string>

#include "qcow/export_layout.h"
#include "qcow/source.h"

namespace qcowfs {

// What a mount serves. The layout and source outlive the session.
struct ExportFile {
  std::string name;                  // file name in the mount root, e.g. "disk.qcow2"
  const qcow::ExportLayout* layout;  // bytes of the image
  const qcow::Source* source;        // where data clusters are read from
};

// Returns the largest read request (bytes) whose reply libfuse can splice through the
// biggest pipe this process may create; the mount asks the kernel for requests this size.
size_t RequestSizeForPipe();

// Returns the low-level operations; their userdata must be an ExportFile*.
const fuse_lowlevel_ops& ExportOperations();

}  // namespace qcowfs
