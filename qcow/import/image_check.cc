#include "qcow/import/image_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "qcow/format/errors.h"
#include "qcow/import/stream_decoder.h"
#include "qcow/io/file_io.h"

namespace qcow {
namespace {

class CountingSink : public ImageSink {
 public:
  void Write(uint64_t, const uint8_t*, uint64_t n) override { data_ += n; }
  void Zero(uint64_t, uint64_t) override {}
  // Never called: the decoder rereads shared bytes from the image file instead.
  void Read(uint64_t, uint8_t*, uint64_t) override {
    throw std::logic_error("the check sink holds no data");
  }
  uint64_t data() const { return data_; }

 private:
  uint64_t data_ = 0;
};

}  // namespace

ImageReport CheckImage(const std::string& path, bool delta) {
  ImageReport report;
  RefuseNonDisk(path);
  // Not blocking, and no controlling terminal, should another file take the name meanwhile.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) ThrowErrno("opening " + path);
  std::unique_ptr<int, void (*)(int*)> closer(&fd, [](int* f) { ::close(*f); });
  struct stat st;
  if (::fstat(fd, &st) != 0) ThrowErrno("stat " + path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    throw UsageError(path + " is neither a regular file nor a block device");
  }
  report.file_size = static_cast<uint64_t>(st.st_size);

  CountingSink sink;
  DecoderOptions options;
  options.delta = delta;
  options.warn = [&](const std::string& w) { report.warnings.push_back(w); };
  options.on_header = [&](const ImageInfo& info) { report.info = info; };
  // Bytes the import would read back from its target are in the file itself; past its end
  // they read as zeros, as QEMU reads them.
  options.reread = [&](uint64_t off, uint8_t* out, uint64_t n) {
    while (n > 0) {
      ssize_t r = ::pread(fd, out, n, static_cast<off_t>(off));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) ThrowErrno("reading " + path);
      if (r == 0) {
        std::memset(out, 0, n);
        return;
      }
      off += r;
      out += r;
      n -= r;
    }
  };
  StreamDecoder decoder(sink, options);
  std::vector<uint8_t> buf(4u << 20);
  uint64_t offset = 0;
  try {
    for (;;) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ThrowErrno("reading " + path);
      if (n == 0) break;
      if (offset == 0) {
        // The fixed fields and backing file name even when validation will refuse them.
        try {
          const std::span<const uint8_t> head(buf.data(), static_cast<size_t>(n));
          report.header = DecodeHeader(head);
          report.backing_file = BackingFileName(*report.header, head);
        } catch (const FormatError&) {
        }
      }
      decoder.Feed(offset, std::span(buf.data(), static_cast<size_t>(n)));
      offset += static_cast<uint64_t>(n);
    }
    decoder.Finish();
  } catch (const FormatError& e) {
    report.problem = e.what();
  } catch (const SpoolFullError& e) {
    report.problem = e.what();
  }
  report.data_bytes = sink.data();
  return report;
}

}  // namespace qcow
