#include "qcow/sources/allocation_map.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <optional>
#include <sstream>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/sources/image_chain.h"

namespace qcow {
namespace {

// A reader for the flat JSON qemu-img map prints: an array of objects whose values are
// numbers, booleans, strings or null.
class MapJson {
 public:
  MapJson(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  DataRanges Parse() {
    DataRanges out;
    Expect('[');
    if (Peek() == ']') {
      ++pos_;
    } else {
      for (;;) {
        ParseEntry(out);
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        Expect(']');
        break;
      }
    }
    if (Peek() != '\0') Fail("text after the closing ']'");
    return out;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) {
    Refuse(name_ + ": not qemu-img map JSON: " + what + " at byte " + std::to_string(pos_));
  }
  char Peek() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  void Expect(char c) {
    if (Peek() != c) Fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string String() {
    Expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\') ++pos_;  // names and file names: escapes kept as the next byte
      if (pos_ < s_.size()) out += s_[pos_++];
    }
    if (pos_ >= s_.size()) Fail("unterminated string");
    ++pos_;
    return out;
  }
  // Returns the number, or nullopt for another kind of value (skipped); booleans as 0/1.
  std::optional<uint64_t> Value() {
    const char c = Peek();
    if (c == '"') {
      String();
      return std::nullopt;
    }
    for (const std::string_view word : {"true", "false", "null"}) {
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        if (word == "null") return std::nullopt;
        return word == "true" ? 1 : 0;
      }
    }
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), v);
    if (ec != std::errc() || end == s_.data() + pos_) Fail("expected a value");
    pos_ = static_cast<size_t>(end - s_.data());
    return v;
  }
  void ParseEntry(DataRanges& out) {
    Expect('{');
    std::optional<uint64_t> start, length, data, zero;
    if (Peek() != '}') {
      for (;;) {
        const std::string key = String();
        Expect(':');
        const std::optional<uint64_t> v = Value();
        if (key == "start") start = v;
        if (key == "length") length = v;
        if (key == "data") data = v;
        if (key == "zero") zero = v;
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        break;
      }
    }
    Expect('}');
    if (!start || !length || !data || !zero) Fail("an entry without start, length, data and zero");
    if (*start != out.size) {
      Fail("an entry starting at " + std::to_string(*start) + " where the one before ended at " +
           std::to_string(out.size));
    }
    if (*length > UINT64_MAX - *start) Fail("an entry past 2^64");
    out.size = *start + *length;
    if (*data && !*zero && *length) {
      if (!out.ranges.empty() && out.ranges.back().first + out.ranges.back().second == *start) {
        out.ranges.back().second += *length;
      } else {
        out.ranges.emplace_back(*start, *length);
      }
    }
  }

  std::string_view s_;
  const std::string& name_;
  size_t pos_ = 0;
};

std::string ReadAll(int fd, const std::string& name) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowErrno("reading " + name);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// A source whose bytes come from one disk and whose allocation from metadata.
class AllocationOverride : public Source {
 public:
  AllocationOverride(std::unique_ptr<Source> disk, DataRanges data)
      : disk_(std::move(disk)), data_(std::move(data)) {}
  uint64_t size() const override { return disk_->size(); }
  std::string name() const override { return disk_->name(); }
  timespec mtime() const override { return disk_->mtime(); }
  uid_t uid() const override { return disk_->uid(); }
  gid_t gid() const override { return disk_->gid(); }
  mode_t mode() const override { return disk_->mode(); }
  void Pieces(uint64_t offset, uint64_t n, std::vector<SourcePiece>& out) const override {
    disk_->Pieces(offset, n, out);
  }
  void ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const override {
    disk_->ReadAt(offset, out, n);
  }
  ClusterMap Allocation(uint32_t cluster_bits) const override {
    ClusterMap::Builder b;
    for (const auto& [offset, length] : data_.ranges) b.AddBytes(offset, length, cluster_bits);
    return b.Build();
  }

 private:
  std::unique_ptr<Source> disk_;
  DataRanges data_;
};

}  // namespace

DataRanges ParseQemuImgMap(std::string_view json, const std::string& name) {
  return MapJson(json, name).Parse();
}

DataRanges ReadDataRanges(const std::string& spec, const SourceOptions& options) {
  if (spec.rfind("fd:", 0) == 0) {
    int fd = -1;
    const auto [end, ec] = std::from_chars(spec.data() + 3, spec.data() + spec.size(), fd);
    if (ec != std::errc() || end != spec.data() + spec.size() || fd < 0) {
      throw UsageError("'" + spec + "' is not fd:N with N a descriptor number");
    }
    return ParseQemuImgMap(ReadAll(fd, spec), spec);
  }
  ChainOptions chain{
      .search_path = options.search_path, .top_format = std::nullopt, .warn = options.warn};
  return ReadDataRanges(ImageChain::Open(spec, chain), spec);
}

DataRanges ReadDataRanges(const ImageChain& image, const std::string& spec) {
  if (image.layers().front().format == LayerFormat::kRaw) {
    // Not qcow2: the JSON qemu-img map printed, or nothing we know.
    const std::string text = ReadAll(image.layers().front().fd, spec);
    const size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || text[first] != '[') {
      Refuse(spec +
             " is neither a qcow2 image, nor a VHD, nor the JSON of qemu-img map "
             "--output=json");
    }
    return ParseQemuImgMap(text, spec);
  }
  DataRanges out;
  out.size = image.size();
  for (const ChainExtent& e : image.Extents()) {
    if (e.kind != ChainExtent::Kind::kData && e.kind != ChainExtent::Kind::kCompressed) continue;
    if (!out.ranges.empty() && out.ranges.back().first + out.ranges.back().second == e.guest) {
      out.ranges.back().second += e.length;
    } else {
      out.ranges.emplace_back(e.guest, e.length);
    }
  }
  return out;
}

std::unique_ptr<Source> WithAllocation(std::unique_ptr<Source> disk, DataRanges data,
                                       const std::string& data_name) {
  const uint64_t disk_size = RoundUpToSector(disk->size());
  if (disk_size != data.size) {
    throw UsageError(disk->name() + " is " + std::to_string(disk->size()) + " bytes but " +
                     data_name + " describes a disk of " + std::to_string(data.size) +
                     " bytes; the allocation must come from the disk's own metadata");
  }
  return std::make_unique<AllocationOverride>(std::move(disk), std::move(data));
}

}  // namespace qcow
