// Cases of small random layouts, some with random pointers and cuts.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "crafted_cases.h"
#include "crafted_image.h"
#include "test_util.h"

namespace qcowfs_test::crafted {

namespace {

// ---- Random layouts ----------------------------------------------------------------------

// Returns a small random image: every kind of entry, shared clusters, objects placed in a
// random order. `chaos` adds a few random pointers and cuts afterwards (anything may
// alias anything then; the refcounts still count it all). Throws std::runtime_error when a
// refcount does not fit the chosen width.
Built RandomLayout(uint64_t seed, bool chaos, std::optional<uint32_t> refcount_order) {
  std::mt19937_64 r(seed);
  auto pick = [&](uint64_t n) { return n ? r() % n : 0; };
  CraftedOptions o;
  const uint32_t bits[] = {9, 10, 12, 14, 16};
  o.cluster_bits = bits[pick(5)];
  o.version = pick(5) == 0 ? 2 : 3;
  if (o.version == 3) {
    o.refcount_order = refcount_order.value_or(static_cast<uint32_t>(pick(7)));
    o.compression = pick(2) ? Compression::kZstd : Compression::kDeflate;
    o.extended_l2 = o.cluster_bits >= 14 && pick(2);
  }
  o.tables_first = pick(2);
  const uint64_t c = uint64_t{1} << o.cluster_bits;
  const uint64_t entries = c / (o.extended_l2 ? 16 : 8);
  const uint64_t n = 1 + pick(std::min<uint64_t>({3 * entries, 1024, (8 << 20) / c}));
  o.virtual_size = (n - 1) * c + 512 * (1 + pick(c / 512));
  if (pick(8) == 0) o.virtual_size += 1 + pick(511);
  if (pick(6) == 0) o.l1_size = static_cast<uint32_t>((n + entries - 1) / entries + 1 + pick(3));
  CraftedImage im(o);
  const uint64_t vclusters = (o.virtual_size + c - 1) / c;

  // What each chosen guest cluster becomes.
  enum Kind { kData, kCompressed, kZero, kZeroAlloc, kShareData, kShareCompressed, kSub };
  std::vector<std::pair<uint64_t, Kind>> guests;
  std::vector<uint64_t> chosen;
  for (uint64_t i = 0, m = 1 + pick(std::min<uint64_t>(vclusters, 48)); i < m; ++i) {
    chosen.push_back(pick(vclusters));
  }
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  std::shuffle(chosen.begin(), chosen.end(), r);
  for (uint64_t g : chosen) {
    Kind k = static_cast<Kind>(pick(7));
    if (o.version == 2 && (k == kZero || k == kZeroAlloc)) k = kData;
    if (!o.extended_l2 && k == kSub) k = kData;
    guests.emplace_back(g * c, k);
  }
  // Objects placed in a random order: data clusters, compressed streams, L2 tables, and
  // the L1 and refcount tables when they do not come first.
  std::vector<std::function<void()>> objects;
  std::map<uint64_t, uint64_t> host;         // guest -> data cluster
  std::map<uint64_t, CompressedSpan> spans;  // guest -> compressed span
  for (const auto& [g, k] : guests) {
    if (k == kData || k == kZeroAlloc || k == kSub) {
      objects.push_back([&, g = g, s = r()] { host[g] = im.AddDataCluster(s); });
    }
    if (k == kCompressed) {
      objects.push_back([&, g = g, s = r()] {
        const auto plain = CompressibleBytes(c, s);
        spans[g] = im.PackCompressed(o.compression == Compression::kZstd ? ZstdFrame(plain)
                                                                         : Deflate(plain));
      });
    }
  }
  std::set<uint64_t> l1_indices;
  for (const auto& [g, k] : guests) l1_indices.insert(g / (c * entries));
  for (uint64_t i : l1_indices) objects.push_back([&, i] { im.AddL2Table(i); });
  if (!o.tables_first) {
    objects.push_back(
        [&] { im.PlaceL1(im.Allocate(std::max<uint64_t>(1, (im.l1_size() * 8 + c - 1) / c))); });
    if (pick(2)) objects.push_back([&] { im.PlaceRefcountTable(im.Allocate(), 1); });
    if (pick(2)) objects.push_back([&] { im.AddRefcountBlockSlot(im.Allocate()); });
  }
  std::shuffle(objects.begin(), objects.end(), r);
  for (auto& place : objects) place();

  for (const auto& [g, k] : guests) {
    auto any_data = [&]() -> std::optional<uint64_t> {
      if (host.empty()) return std::nullopt;
      auto it = host.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(pick(host.size())));
      return it->second;
    };
    switch (k) {
      case kData:
        im.MapData(g, host.at(g));
        break;
      case kCompressed:
        im.MapCompressed(g, spans.at(g));
        break;
      case kZero:
        im.MapZero(g);
        break;
      case kZeroAlloc:
        im.MapZero(g, host.at(g));
        break;
      case kSub: {
        const uint32_t alloc = static_cast<uint32_t>(r());
        im.MapSubclusters(g, host.at(g), alloc, static_cast<uint32_t>(r()) & ~alloc);
        break;
      }
      case kShareData:
        if (auto h = any_data()) im.MapData(g, *h);
        break;
      case kShareCompressed:
        if (!spans.empty()) {
          auto it = spans.begin();
          std::advance(it, static_cast<std::ptrdiff_t>(pick(spans.size())));
          im.MapCompressed(g, it->second);
        }
        break;
    }
  }
  if (chaos) {
    const uint64_t clusters = im.end() / c;
    for (uint64_t i = 0, m = 1 + pick(3); i < m; ++i) {
      const uint64_t g = pick(vclusters) * c, target = (1 + pick(clusters)) * c;
      switch (pick(4)) {
        case 0:
          im.MapData(g, target);
          break;
        case 1:
          im.SetL1Entry(pick(im.l1_size()), target);
          break;
        case 2:
          im.MapCompressed(g, {target - pick(c), 1 + pick(2)});
          break;
        case 3:
          im.SetFileSize(pick(im.end() + c));
          break;
      }
    }
  }
  return {im.Build(), o.virtual_size / 512 * 512};
}

constexpr uint64_t kRandomLayouts = 72;

Case RandomCase(uint64_t seed) {
  const bool chaos = seed % 3 == 2;
  return {"random_layout_" + std::to_string(seed) + (chaos ? "_chaos" : ""),
          [seed, chaos] {
            try {
              return RandomLayout(seed, chaos, std::nullopt);
            } catch (const std::runtime_error&) {
              return RandomLayout(seed, chaos, 4);  // sharing needs wider refcounts
            }
          },
          chaos ? Check::kAny : Check::kClean, chaos ? Convert::kAny : Convert::kOk,
          chaos ? Want::kRule : Want::kImport};
}

}  // namespace

std::vector<Case> RandomCases() {
  std::vector<Case> v;
  for (uint64_t seed = 0; seed < kRandomLayouts; ++seed) v.push_back(RandomCase(seed));
  return v;
}

}  // namespace qcowfs_test::crafted
