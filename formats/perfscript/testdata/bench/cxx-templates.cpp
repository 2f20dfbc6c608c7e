#include <map>
#include <vector>
#include <string>
#include <algorithm>
#include <unordered_map>
#include <cstdio>
#include <chrono>
namespace app { namespace {
template <typename K, typename V> struct Index {
  std::map<K, V> m;
  void add(const K& k, const V& v) { m[k] += v; }
  V sum() const { V s{}; for (auto& kv : m) s += kv.second; return s; }
};
std::string mk(int i) { char b[32]; snprintf(b, sizeof b, "key-%08d", i * 7919 % 100003); return b; }
} // namespace
struct Engine {
  Index<std::string, long> idx;
  std::unordered_map<long, std::vector<int>> buckets;
  long run(int n) {
    for (int i = 0; i < n; i++) idx.add(mk(i), i);
    for (int i = 0; i < n; i++) buckets[i % 997].push_back(i ^ 0x5a5a);
    long t = 0;
    for (auto& b : buckets) { std::sort(b.second.begin(), b.second.end()); t += b.second.front(); }
    return t + idx.sum();
  }
};
}
int main(int argc, char** argv) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(argc > 1 ? atoi(argv[1]) : 5);
  long t = 0;
  while (std::chrono::steady_clock::now() < end) { app::Engine e; t += e.run(200000); }
  printf("%ld\n", t);
}
