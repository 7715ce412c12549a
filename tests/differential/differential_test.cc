// Differential test: valid images made by qemu-img/qemu-io, mutated deterministically, fed
// to qemu-img convert, to the import decoder and to the chain reader as an export source.
// Wherever two of them accept a mutant, their guest views must be byte-identical, and the
// export the chain reader writes must read (by qemu-img) as the view it read. Acceptance
// may differ: qcowfs refuses more than QEMU by design (README, "Importing an image"), and
// QEMU checks structures qcowfs never reads (snapshots, refcounts at open). Those cases are
// counted by pattern and printed, not failed.
//
// DIFFERENTIAL_MUTANTS=N runs N mutants in all (spread over the seeds; the default is the
// CI's count), DIFFERENTIAL_SEED=S another sequence, DIFFERENTIAL_ONLY=SEED:INDEX one
// mutant (described and kept whatever the readers say), DIFFERENTIAL_LOG=FILE appends one
// tab-separated line per mutant, and the mutants behind findings are kept in
// DIFFERENTIAL_KEEP (default: differential-findings/ in the working directory).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "differential/mutator.h"
#include "differential/qcow2_layout.h"
#include "differential/readers.h"
#include "test_util.h"

namespace qcowfs_test {
namespace {

using Outcome = Verdict::Outcome;

// What CI runs: enough to reach every mutation kind on every seed, in well under a minute.
constexpr uint64_t kDefaultMutants = 272;
constexpr uint64_t kDefaultSeed = 0x51f1e2d3c4b5a697ull;

struct Seed {
  const char* name;
  std::string commands;  // leave the image in seed.qcow2
};

std::string Io(const std::string& commands) {
  return " && qemu-io -f qcow2 " + commands + " seed.qcow2 >/dev/null";
}
std::string Create(const std::string& options, const std::string& size) {
  return "qemu-img create -q -f qcow2 -o " + options + " seed.qcow2 " + size;
}
// A raw disk with text (compressible, not trivially) and random data at a few places.
const std::string kRaw =
    "truncate -s 1M raw && seq 1 30000 | dd of=raw bs=1k seek=3 conv=notrunc status=none && "
    "head -c 20000 /dev/urandom | dd of=raw bs=1k seek=700 conv=notrunc status=none && ";
std::string Convert(const std::string& options, bool compress = false) {
  return kRaw + "qemu-img convert -q " + (compress ? "-c " : "") + "-f raw -O qcow2 -o " + options +
         " raw seed.qcow2";
}

// Small images of every layout the readers know (clusters of 512 B to 64 KiB, a few MiB).
const std::vector<Seed>& Seeds() {
  static const std::vector<Seed> seeds = {
      {"plain_512", Convert("cluster_size=512")},
      {"plain_4k", Convert("cluster_size=4k")},
      {"plain_64k", Create("cluster_size=64k", "4M") +
                        Io("-c 'write -P 1 0 100k' -c 'write -P 2 1M 64k' -c 'write -P 3 3M 5k'")},
      {"deflate_4k", Convert("cluster_size=4k", true)},
      {"deflate_64k", Convert("cluster_size=64k", true)},
      {"zstd_1k", Convert("cluster_size=1k,compression_type=zstd", true)},
      {"zstd_64k", Convert("cluster_size=64k,compression_type=zstd", true)},
      {"extended_l2", Create("extended_l2=on,cluster_size=16k", "1M") +
                          Io("-c 'write -P 1 1k 3k' -c 'write -z 20k 1k' -c 'write -P 2 100k 40k' "
                             "-c 'write -z -u 200k 16k' -c 'write -c -P 3 512k 16k'")},
      {"v2", Convert("compat=0.10,cluster_size=4k") + Io("-c 'write -z 8k 8k'")},
      {"v2_compressed", Convert("compat=0.10,cluster_size=2k", true)},
      {"zero_clusters", Create("cluster_size=1k", "256k") +
                            Io("-c 'write -P 3 0 8k' -c 'write -z 2k 2k' -c 'write -z -u 4k 1k' "
                               "-c 'discard 6k 1k' -c 'write -z 64k 4k'")},
      {"snapshot", Create("cluster_size=4k", "512k") + Io("-c 'write -P 5 0 64k'") +
                       " && qemu-img snapshot -c s1 seed.qcow2" +
                       Io("-c 'write -P 6 4k 8k' -c 'write -z 32k 4k'")},
      {"refcount_1", Convert("refcount_bits=1,cluster_size=1k")},
      {"refcount_64", Convert("refcount_bits=64,cluster_size=4k")},
      {"resized", Create("cluster_size=512", "64k") + Io("-c 'write -P 5 0 2k'") +
                      " && qemu-img resize -q seed.qcow2 2M" + Io("-c 'write -P 6 1900k 1k'")},
      {"prealloc", Create("cluster_size=4k,preallocation=metadata", "256k") +
                       Io("-c 'write -P 7 8k 8k' -c 'write -z 64k 4k'")},
      {"bitmap", Create("cluster_size=4k", "512k") + " && qemu-img bitmap --add seed.qcow2 b0" +
                     Io("-c 'write -P 8 4k 60k'")},
  };
  return seeds;
}

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

std::string EnvText(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Replaces digits by '#' and cuts the text, so that messages group by kind.
std::string Shape(std::string text, size_t max = 120) {
  std::string out;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)) ||
        (c >= 'a' && c <= 'f' && !out.empty() && (out.back() == '#'))) {
      if (out.empty() || out.back() != '#') out += '#';
    } else {
      out += c;
    }
    if (out.size() >= max) break;
  }
  return out;
}

// One mutant's results.
struct Judgement {
  Verdict qemu, import, chain, exported;
  QemuCheck check;
  bool large = false;
  std::vector<std::string> findings;
  // "Q+ I- C+": which readers accepted (qemu-img, import, chain).
  std::string Pattern() const {
    auto mark = [](const Verdict& v) {
      return v.accepted() || v.outcome == Outcome::kTooLarge ? "+"
             : v.outcome == Outcome::kRefused                ? "-"
                                                             : "!";
    };
    return std::string("Q") + mark(qemu) + " I" + mark(import) + " C" + mark(chain) +
           (large ? " large" : "");
  }
};

class Differential : public ::testing::TestWithParam<Seed> {
 protected:
  void SetUp() override {
    const auto made = Sh("cd " + Quote(dir_.path()) + " && " + GetParam().commands);
    ASSERT_EQ(made.status, 0) << made.output;
    seed_ = ReadFile(dir_ / "seed.qcow2");
    layout_ = ScanQcow2(seed_);
  }

  // Feeds `image` to the three readers and compares what they read.
  Judgement Judge(const std::string& image, uint64_t chunk) {
    Judgement r;
    const auto bytes = ReadFile(image);
    const uint64_t header_size = bytes.size() >= 32 ? LoadBe(bytes, 24, 8) : 0;
    r.large = header_size > kMaxVirtualSize;
    const std::string q = dir_ / "qemu.raw", t = dir_ / "import.raw", c = dir_ / "chain.raw",
                      e = dir_ / "export.qcow2", ev = dir_ / "export.raw";
    for (const auto& f : {q, t, c, e, ev}) ::unlink(f.c_str());
    r.qemu = QemuView(image, q, header_size);
    r.import =
        ImportView(image, t, r.large ? 1 << 20 : header_size / 512 * 512, chunk, dir_.path());
    r.chain = ChainView(image, c, e);
    if (r.import.accepted() || r.chain.accepted()) r.check = RunQemuCheck(image);

    for (const Verdict* v : {&r.import, &r.chain}) {
      const char* who = v == &r.import ? "import" : "chain";
      if (v->outcome == Outcome::kCrashed || v->outcome == Outcome::kHung ||
          v->outcome == Outcome::kUnexpected) {
        r.findings.push_back(std::string(who) + " " + OutcomeName(v->outcome) + ": " + v->message);
      }
    }
    auto compare = [&](const Verdict& a, const std::string& pa, const Verdict& b,
                       const std::string& pb, const char* what) {
      if (!a.accepted() || !b.accepted()) return;
      if (const auto at = FirstDifference(pa, pb)) {
        r.findings.push_back(std::string(what) + " differ at byte " + std::to_string(*at));
      }
    };
    compare(r.qemu, q, r.import, t, "qemu-img's and the import's views");
    compare(r.qemu, q, r.chain, c, "qemu-img's and the chain reader's views");
    compare(r.import, t, r.chain, c, "the import's and the chain reader's views");
    // qemu-img opened the image but could not read guest data from it: a reader that reads
    // something there makes it up (QEMU's refusals at open are about structures no read
    // needs, or that qcowfs checks itself).
    if (r.qemu.outcome == Outcome::kRefused &&
        r.qemu.message.find("error while reading") != std::string::npos) {
      for (const Verdict* v : {&r.import, &r.chain}) {
        if (v->accepted()) {
          r.findings.push_back(std::string(v == &r.import ? "the import" : "the chain reader") +
                               " reads guest data that qemu-img cannot read");
        }
      }
    }
    if (r.chain.accepted()) {
      struct stat st {};
      const uint64_t size = ::stat(c.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
      r.exported = QemuView(e, ev, size);
      if (!r.exported.accepted()) {
        r.findings.push_back("qemu-img cannot read the export: " + r.exported.message);
      }
      compare(r.chain, c, r.exported, ev, "the chain reader's view and its export's");
    }
    // Messages name the image by its path, which changes from run to run.
    for (Verdict* v : {&r.qemu, &r.import, &r.chain}) {
      for (size_t at; (at = v->message.find(image)) != std::string::npos;) {
        v->message.replace(at, image.size(), "IMAGE");
      }
    }
    return r;
  }

  TempDir dir_;
  std::vector<uint8_t> seed_;
  Qcow2Layout layout_;
};

TEST_P(Differential, MutantsReadAlikeWhereverTwoReadersAccept) {
  const std::string name = GetParam().name;
  const std::string image = dir_ / "mutant.qcow2";

  // The seed itself: all three accept it, read it alike, and qemu-img check finds it clean.
  WriteAt(image, 0, seed_);
  const Judgement unmutated = Judge(image, 65536);
  EXPECT_EQ(unmutated.Pattern(), "Q+ I+ C+") << unmutated.import.message << unmutated.chain.message;
  EXPECT_EQ(unmutated.check.status, 0) << unmutated.check.first_problem;
  EXPECT_TRUE(unmutated.findings.empty()) << unmutated.findings.front();

  const uint64_t total = EnvNumber("DIFFERENTIAL_MUTANTS", kDefaultMutants);
  const uint64_t per_seed = (total + Seeds().size() - 1) / Seeds().size();
  const uint64_t base = EnvNumber("DIFFERENTIAL_SEED", kDefaultSeed) ^ Fnv1a(name);
  uint64_t first = 0, last = per_seed;
  const std::string only = EnvText("DIFFERENTIAL_ONLY");
  if (!only.empty()) {
    if (only.substr(0, only.find(':')) != name)
      GTEST_SKIP() << "DIFFERENTIAL_ONLY names another seed";
    first = std::strtoull(only.substr(only.find(':') + 1).c_str(), nullptr, 0);
    last = first + 1;
  }
  // One write per line on an O_APPEND file: seeds run in parallel may share the log.
  const std::string log_path = EnvText("DIFFERENTIAL_LOG");
  const int log = log_path.empty()
                      ? -1
                      : ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  const std::string keep = EnvText("DIFFERENTIAL_KEEP", "differential-findings");

  std::map<std::string, uint64_t> patterns, corrupt_accepted;
  uint64_t findings = 0, unchanged = 0;
  static constexpr uint64_t kChunks[] = {512, 4096, 65536, 1 << 20};
  for (uint64_t i = first; i < last; ++i) {
    const Mutant m = Mutate(seed_, layout_, base + i * 0x9e3779b97f4a7c15ull);
    if (m.bytes == seed_) {
      ++unchanged;
      continue;
    }
    ::unlink(image.c_str());
    WriteAt(image, 0, m.bytes);
    const Judgement r = Judge(image, kChunks[i % std::size(kChunks)]);
    ++patterns[r.Pattern()];
    if ((r.import.accepted() || r.chain.accepted()) && r.check.status == 2) {
      ++corrupt_accepted[r.Pattern()];
    }
    if (log >= 0) {
      const std::string line = name + '\t' + std::to_string(i) + '\t' + r.Pattern() + '\t' +
                               std::to_string(r.check.status) + '\t' + Shape(r.qemu.message) +
                               '\t' + Shape(r.import.message) + '\t' + Shape(r.chain.message) +
                               '\t' + Shape(r.check.first_problem) + '\t' +
                               (r.findings.empty() ? "" : r.findings.front()) + '\t' +
                               m.description + '\n';
      EXPECT_EQ(::write(log, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    }
    // A mutant replayed alone is kept and described whatever the readers said.
    if (r.findings.empty() && only.empty()) continue;
    findings += !r.findings.empty();
    ::mkdir(keep.c_str(), 0755);
    const std::string kept = keep + "/" + name + "-" + std::to_string(i) + ".qcow2";
    ::unlink(kept.c_str());
    WriteAt(kept, 0, m.bytes);
    std::string all;
    for (const auto& f : r.findings) all += "\n  " + f;
    std::ostringstream what;
    what << name << " mutant " << i << " (DIFFERENTIAL_ONLY=" << name << ":" << i << ", kept as "
         << kept << "): " << m.description << "\n  " << r.Pattern() << ", qemu-img check "
         << r.check.status << " " << r.check.first_problem << all
         << "\n  qemu-img: " << r.qemu.message << "\n  import: " << r.import.message
         << "\n  chain: " << r.chain.message;
    if (r.findings.empty()) {
      std::printf("%s\n", what.str().c_str());
    } else {
      ADD_FAILURE() << what.str();
    }
  }
  std::string summary = name + ": " + std::to_string(last - first) + " mutants (" +
                        std::to_string(unchanged) + " unchanged), " + std::to_string(findings) +
                        " with findings; accepted by (Q qemu-img, I import, C chain):";
  for (const auto& [p, n] : patterns) {
    summary += "\n  " + p + ": " + std::to_string(n);
    if (corrupt_accepted.count(p)) {
      summary += " (" + std::to_string(corrupt_accepted[p]) + " that qemu-img check calls corrupt)";
    }
  }
  std::printf("%s\n", summary.c_str());
  if (log >= 0) ::close(log);
}

void PrintTo(const Seed& seed, std::ostream* os) { *os << seed.name; }

INSTANTIATE_TEST_SUITE_P(Seeds, Differential, ::testing::ValuesIn(Seeds()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qcowfs_test
