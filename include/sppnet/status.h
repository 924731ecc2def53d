// Status codes returned by every backend entry point. Backends never throw and never abort;
// the binding turns a non-OK status into a JavaScript exception carrying `message`.
#pragma once
#include <string>

namespace sppnet {

enum class Code { kOk = 0, kInvalidArgument, kOutOfMemory, kCudaError, kUnavailable, kInternal };

struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
  static Status Ok() { return {}; }
  static Status Error(Code c, std::string m) { return {c, std::move(m)}; }
};

}  // namespace sppnet
