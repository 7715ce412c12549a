#include "fuse/export_fs.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <system_error>
#include <vector>

#include "fuse/log.h"
#include "qcow/errors.h"

namespace qcowfs {
namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kExportIno = 2;
// The image never changes while mounted, so the kernel may cache names and attributes.
constexpr double kCacheSeconds = 3600;
// Preferred I/O size reported in st_blksize: tools like cp and cat read this much at once.
constexpr blksize_t kPreferredIoSize = 1 << 20;
// Zero padding in one reply is shorter than a cluster (at most 2 MiB).
constexpr size_t kZeroBufferSize = 2u << 20;
alignas(4096) const uint8_t kZeros[kZeroBufferSize] = {};

ExportFile& Fs(fuse_req_t req) { return *static_cast<ExportFile*>(fuse_req_userdata(req)); }

// Replies with the errno for the exception being handled, logging it once. Every callback
// ends here, so no exception reaches libfuse.
void ReplyError(fuse_req_t req, const char* op) {
  int err = EIO;
  try {
    throw;
  } catch (const std::system_error& e) {
    err = e.code().value() ? e.code().value() : EIO;
    Log(LOG_ERR, "%s: %s", op, e.what());
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
    Log(LOG_ERR, "%s: out of memory", op);
  } catch (const std::exception& e) {
    Log(LOG_ERR, "%s: %s", op, e.what());
  }
  fuse_reply_err(req, err);
}

struct stat Attr(const ExportFile& fs, fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_uid = getuid();
  st.st_gid = getgid();
  const timespec t = fs.source->mtime();
  st.st_atim = st.st_mtim = st.st_ctim = t;
  if (ino == kRootIno) {
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
  } else {
    const uint64_t size = fs.layout->image_size();
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(size);
    st.st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
    st.st_blksize = kPreferredIoSize;
  }
  return st;
}

void OpInit(void*, fuse_conn_info* conn) {
  // Data clusters are spliced from the source straight into the reply when possible.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  try {
    ExportFile& fs = Fs(req);
    if (parent != kRootIno || fs.name != name) return (void)fuse_reply_err(req, ENOENT);
    fuse_entry_param e{};
    e.ino = kExportIno;
    e.attr = Attr(fs, kExportIno);
    e.attr_timeout = e.entry_timeout = kCacheSeconds;
    fuse_reply_entry(req, &e);
  } catch (...) {
    ReplyError(req, "lookup");
  }
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  try {
    if (ino != kRootIno && ino != kExportIno) return (void)fuse_reply_err(req, ENOENT);
    struct stat st = Attr(Fs(req), ino);
    fuse_reply_attr(req, &st, kCacheSeconds);
  } catch (...) {
    ReplyError(req, "getattr");
  }
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
    ExportFile& fs = Fs(req);
    struct Entry {
      const char* name;
      fuse_ino_t ino;
      mode_t mode;
    };
    const Entry entries[] = {{".", kRootIno, S_IFDIR},
                             {"..", kRootIno, S_IFDIR},
                             {fs.name.c_str(), kExportIno, S_IFREG}};
    std::vector<char> buf(size);
    size_t used = 0;
    for (off_t i = off; i < static_cast<off_t>(std::size(entries)); ++i) {
      struct stat st {};
      st.st_ino = entries[i].ino;
      st.st_mode = entries[i].mode;
      size_t n =
          fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name, &st, i + 1);
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  } catch (...) {
    ReplyError(req, "readdir");
  }
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  try {
    if (ino != kExportIno) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      return (void)fuse_reply_err(req, EROFS);
    }
    fi->keep_cache = 1;  // the image is immutable while mounted
    fuse_reply_open(req, fi);
  } catch (...) {
    ReplyError(req, "open");
  }
}

// Per-thread buffers reused across reads, so that the hot path does not allocate.
struct ReadBuffers {
  std::vector<uint8_t> metadata;
  std::vector<uint8_t> data;  // used only when the source cannot be spliced
  std::vector<qcow::ExportSegment> segments;
  std::vector<uint8_t> bufvec;
};

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    if (ino != kExportIno) return (void)fuse_reply_err(req, EISDIR);
    ExportFile& fs = Fs(req);
    thread_local ReadBuffers b;
    fs.layout->Plan(static_cast<uint64_t>(off), size, b.metadata, b.segments);
    const int splice_fd = fs.source->splice_fd();
    size_t pieces = 0, copied = 0;
    for (const auto& s : b.segments) {
      pieces += s.kind == qcow::ExportSegment::Kind::kZero
                    ? (s.length + kZeroBufferSize - 1) / kZeroBufferSize
                    : 1;
      if (s.kind == qcow::ExportSegment::Kind::kSource && splice_fd < 0) copied += s.length;
    }
    if (pieces == 0) return (void)fuse_reply_buf(req, nullptr, 0);
    b.data.resize(copied);
    b.bufvec.resize(sizeof(fuse_bufvec) + (pieces - 1) * sizeof(fuse_buf));
    auto* bv = reinterpret_cast<fuse_bufvec*>(b.bufvec.data());
    std::memset(bv, 0, b.bufvec.size());
    bv->count = pieces;
    size_t i = 0, data_used = 0;
    for (const auto& s : b.segments) {
      switch (s.kind) {
        case qcow::ExportSegment::Kind::kBytes:
          bv->buf[i].mem = b.metadata.data() + s.position;
          bv->buf[i++].size = s.length;
          break;
        case qcow::ExportSegment::Kind::kZero:
          for (uint64_t left = s.length; left > 0;) {
            size_t n = std::min<uint64_t>(left, kZeroBufferSize);
            bv->buf[i].mem = const_cast<uint8_t*>(kZeros);
            bv->buf[i++].size = n;
            left -= n;
          }
          break;
        case qcow::ExportSegment::Kind::kSource:
          if (splice_fd >= 0) {
            bv->buf[i].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
            bv->buf[i].fd = splice_fd;
            bv->buf[i].pos = static_cast<off_t>(s.position);
          } else {
            fs.source->ReadAt(s.position, b.data.data() + data_used, s.length);
            bv->buf[i].mem = b.data.data() + data_used;
            data_used += s.length;
          }
          bv->buf[i++].size = s.length;
          break;
      }
    }
    fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
  } catch (...) {
    ReplyError(req, "read");
  }
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  try {
    struct statvfs st {};
    st.f_bsize = st.f_frsize = 512;
    st.f_blocks = (Fs(req).layout->image_size() + 511) / 512;
    st.f_files = 2;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
  } catch (...) {
    ReplyError(req, "statfs");
  }
}

// Everything that would change the tree: the export is read-only.
void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

}  // namespace

const fuse_lowlevel_ops& ExportOperations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.getattr = OpGetattr;
    o.readdir = OpReaddir;
    o.open = OpOpen;
    o.read = OpRead;
    o.statfs = OpStatfs;
    o.setattr = OpSetattr;
    o.mknod = OpMknod;
    o.mkdir = OpMkdir;
    o.unlink = OpUnlink;
    o.rmdir = OpUnlink;
    o.rename = OpRename;
    o.create = OpCreate;
    return o;
  }();
  return ops;
}

}  // namespace qcowfs
