// The error boundary of the C ABI: internal code throws optim::Error (or anything else), and every
// exported function runs its body inside optim::guard(), which turns the exception into a status
// code and a thread-local message. Nothing thrown inside the library can cross extern "C".
#pragma once

#include <optim.h>

#include <exception>
#include <new>
#include <string>
#include <utility>

namespace optim {

class Error : public std::exception {
  public:
    Error(optim_status status, std::string message) : status_(status), message_(std::move(message))
    {
    }
    optim_status status() const noexcept { return status_; }
    const char* what() const noexcept override { return message_.c_str(); }

  private:
    optim_status status_;
    std::string message_;
};

[[noreturn]] inline void fail(optim_status status, std::string message)
{
    throw Error(status, std::move(message));
}

// Fails with OPTIM_STATUS_INVALID_ARGUMENT unless `condition` holds. A macro so that the message is
// built only on failure (validation runs per tensor on every step).
#define OPTIM_REQUIRE(condition, function, message)                                                \
    do {                                                                                           \
        if (!(condition))                                                                          \
            ::optim::fail(OPTIM_STATUS_INVALID_ARGUMENT,                                           \
                          std::string(function) + ": " + (message));                               \
    } while (0)

// Records first + second + third as the calling thread's last error (optim_last_error). Never
// allocates and never fails; a message longer than the buffer is cut.
void set_last_error(const char* first, const char* second = "", const char* third = "") noexcept;

// Runs body() and converts every exception into a status. `function` prefixes messages that do not
// already name it.
template <class Body>
optim_status guard(const char* function, Body&& body) noexcept
{
    try {
        body();
        return OPTIM_STATUS_OK;
    } catch (const Error& e) {
        set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc&) {
        set_last_error(function, ": out of host memory");
        return OPTIM_STATUS_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        set_last_error(function, ": internal error: ", e.what());
        return OPTIM_STATUS_INTERNAL;
    } catch (...) {
        set_last_error(function, ": internal error: unknown exception");
        return OPTIM_STATUS_INTERNAL;
    }
}

} // namespace optim
