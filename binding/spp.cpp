// spp entry points: unpack the arguments lib/ prepared and checked, pick the backend, queue.
#include <algorithm>
#include <set>

#include "common.h"
#include "sppnet/ops.h"

namespace sppnet {
namespace binding {
namespace {

struct SppJob {
  SppProblem p;
  std::vector<int64_t> offset;
  std::vector<int32_t> height, width;
  std::vector<Region> regions;
  FloatArg input, output, grad_output;
  Buffers buffers;  // the JS values of the three (the task's keep-alive list)
  bool device = false;
};

// { input, inputOffset, offsets: Float64Array, heights, widths: Int32Array, channels, total,
//   regions: Int32Array [R*5], levels: Int32Array, rule, pool, output, outputOffset,
//   gradOutput?, gradOutputOffset? }  ->  a job whose pointers stay valid while it runs.
std::shared_ptr<SppJob> unpack(const Napi::Object& a, bool backward) {
  Napi::Env env = a.Env();
  auto j = std::make_shared<SppJob>();
  const Napi::Float64Array off = float64_array(a, "offsets");
  const Napi::Int32Array hs = int32_array(a, "heights"), ws = int32_array(a, "widths");
  const Napi::Int32Array reg = int32_array(a, "regions"), lv = int32_array(a, "levels");
  const size_t N = off.ElementLength();
  if (hs.ElementLength() != N || ws.ElementLength() != N || reg.ElementLength() % 5 != 0 ||
      lv.ElementLength() < 1 || lv.ElementLength() > static_cast<size_t>(kMaxLevels))
    throw Napi::RangeError::New(env, "internal: inconsistent SPP tables");
  j->offset.assign(off.Data(), off.Data() + N);
  j->height.assign(hs.Data(), hs.Data() + N);
  j->width.assign(ws.Data(), ws.Data() + N);
  // regions: (map, y0, x0, h, w) per region, as lib/ops/spp.ts packs them.
  const int32_t* rv = reg.Data();
  j->regions.reserve(reg.ElementLength() / 5);
  for (size_t r = 0; r < reg.ElementLength() / 5; ++r, rv += 5) j->regions.push_back(Region{rv[0], rv[1], rv[2], rv[3], rv[4]});
  SppProblem& p = j->p;
  p.input = RaggedView{static_cast<int32_t>(N), int_field(a, "channels"), j->offset.data(), j->height.data(), j->width.data(),
                       static_cast<int64_t>(a.Get("total").As<Napi::Number>().Int64Value())};
  p.num_regions = static_cast<int32_t>(j->regions.size());
  p.regions = j->regions.data();
  p.num_levels = static_cast<int32_t>(lv.ElementLength());
  std::copy(lv.Data(), lv.Data() + p.num_levels, p.levels);
  p.rule = int_field(a, "rule");
  p.pool = int_field(a, "pool");
  // Defensive bounds (lib/ has already given the user-facing errors): nothing may read or write
  // outside the buffers, whoever calls the binding.
  for (size_t i = 0; i < N; ++i)
    if (j->offset[i] < 0 || j->offset[i] + int64_t{p.input.channels} * j->height[i] * j->width[i] > p.input.total)
      throw Napi::RangeError::New(env, "internal: map outside its buffer");
  for (const Region& r : j->regions)
    if (r.map < 0 || r.map >= static_cast<int32_t>(N) || r.y0 < 0 || r.x0 < 0 || r.h < 1 || r.w < 1 ||
        r.y0 + r.h > j->height[r.map] || r.x0 + r.w > j->width[r.map])
      throw Napi::RangeError::New(env, "internal: region outside its map");
  for (int l = 0; l < p.num_levels; ++l)
    if (p.levels[l] < 1) throw Napi::RangeError::New(env, "internal: level < 1");
  if (p.rule < kBinsAdaptive || p.rule > kBinsCaffe || (p.pool != kPoolMax && p.pool != kPoolAvg))
    throw Napi::RangeError::New(env, "internal: unknown bin rule or pool kind");
  // Every bin non-empty for every region side and level (an empty bin would index out of bounds).
  std::set<std::pair<int32_t, int32_t>> checked;
  for (const Region& r : j->regions)
    for (int l = 0; l < p.num_levels; ++l)
      for (const int32_t a : {r.h, r.w})
        if (checked.insert({a, p.levels[l]}).second && bin_check(p.rule, p.levels[l], a) != kBinsOk)
          throw Napi::RangeError::New(env, "internal: bin rule undefined for a region size and level");
  j->input = j->buffers.arg(a, "input", p.input.total);
  if (backward) {
    j->grad_output = j->buffers.arg(a, "gradOutput", p.output_elements());
    j->output = j->buffers.arg(a, "output", p.input.total);
  } else {
    j->output = j->buffers.arg(a, "output", p.output_elements());
  }
  j->device = one_device(env, {&j->input, &j->output, &j->grad_output}, "SPP buffers");
  return j;
}

// Element visits of a pass over the job (queue()'s inline_work): each level reads every region
// once, and every output (or input gradient) element is written once.
int64_t spp_work(const SppJob& j, bool backward) {
  int64_t w = backward ? j.p.input.total : j.p.output_elements();
  for (const Region& r : j.regions) w += int64_t{j.p.input.channels} * r.h * r.w * j.p.num_levels;
  return w;
}

Napi::Value SppForward(const Napi::CallbackInfo& info) {
  auto j = unpack(info[0].As<Napi::Object>(), false);
  return queue_op(
      info.Env(), j->device, j->buffers, [j](const OpTable& ops) { return ops.spp_forward(j->p, j->input.ptr, j->output.ptr); },
      spp_work(*j, false));
}

Napi::Value SppBackward(const Napi::CallbackInfo& info) {
  auto j = unpack(info[0].As<Napi::Object>(), true);
  return queue_op(
      info.Env(), j->device, j->buffers,
      [j](const OpTable& ops) { return ops.spp_backward(j->p, j->input.ptr, j->grad_output.ptr, j->output.ptr); },
      spp_work(*j, true));
}

Napi::Value BinCheck(const Napi::CallbackInfo& info) {
  const int32_t rule = info[0].As<Napi::Number>().Int32Value(), n = info[1].As<Napi::Number>().Int32Value(),
                a = info[2].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(), bin_check(rule, n, a));
}

}  // namespace

void init_spp(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, {{"sppForward", SppForward}, {"sppBackward", SppBackward}, {"binCheck", BinCheck}});
}

}  // namespace binding
}  // namespace sppnet
