// The error boundary of the C ABI: internal code throws optim::Error (or anything else), and every
// exported function runs its body inside optim::guard(), which turns the exception into a status code
// and a thread-local message. Nothing thrown inside the library can cross extern "C".
#pragma once

#include <optim.h>

#include <exception>
#include <new>
#include <string>
#include <utility>

namespace optim {

class Error : public std::exception {
public:
    Error(optim_status status, std::string message) : status_(status), message_(std::move(message)) {}
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

inline void require(bool condition, const char* function, const std::string& message)
{
    if (!condition) fail(OPTIM_STATUS_INVALID_ARGUMENT, std::string(function) + ": " + message);
}

void set_last_error(const char* message) noexcept;

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
        try {
            set_last_error((std::string(function) + ": out of host memory").c_str());
        } catch (...) {
            set_last_error("out of host memory");
        }
        return OPTIM_STATUS_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        try {
            set_last_error((std::string(function) + ": internal error: " + e.what()).c_str());
        } catch (...) {
            set_last_error("internal error");
        }
        return OPTIM_STATUS_INTERNAL;
    } catch (...) {
        set_last_error("internal error: unknown exception");
        return OPTIM_STATUS_INTERNAL;
    }
}

} // namespace optim
