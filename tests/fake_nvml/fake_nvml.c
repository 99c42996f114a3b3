/*
 * A fake libnvidia-ml.so.1 for testing zeusd's real NVML code path without a GPU.
 *
 * It exports the NVML symbols pynvml touches for zeusd's calls and behaves like
 * the driver on an H200 machine:
 *   - FAKE_NVML_GPUS=N (default 2, at most 16) H200-like GPUs at 0000:00:06.0, 07, ...
 *   - setters change what getters return; out-of-range values -> INVALID_ARGUMENT
 *     (power limit 200000-700000 mW, graphics clocks 345-1980 MHz, memory clocks
 *     2201-3201 MHz, min <= max);
 *   - setters need CAP_SYS_ADMIN in the caller's effective set (CapEff in
 *     /proc/self/status), else NO_PERMISSION, as with the real driver;
 *   - settings persist in FAKE_NVML_STATE (default /run/fake-nvml/state; the
 *     directory is created), so they survive a daemon restart like a real GPU's.
 *     Under systemd's ProtectSystem=strict the unit needs ReadWritePaths= for it;
 *     a failed save is reported on stderr and the setting still applies;
 *   - the energy counter grows with CLOCK_BOOTTIME at about 75 W, so it is
 *     monotonic across processes; instantaneous power wiggles around 75 W;
 *   - FAKE_NVML_NO_INSTANT=1: no POWER_INSTANT field (per-field NOT_SUPPORTED);
 *     FAKE_NVML_NO_ENERGY=1: no energy counter (NOT_SUPPORTED);
 *   - FAKE_NVML_LOG=path appends one line per call: "pid function args -> code".
 *   - nvmlInit failures, as a node's misconfiguration produces them:
 *     FAKE_NVML_INIT_ERROR=N makes nvmlInit return NVML code N (e.g. 18,
 *     LIB_RM_VERSION_MISMATCH after a driver upgrade without reload; 4,
 *     NO_PERMISSION); FAKE_NVML_CTL=path makes nvmlInit open that file
 *     read-write first, as the real library opens /dev/nvidiactl: missing ->
 *     DRIVER_NOT_LOADED (9), EPERM/EACCES (a devices cgroup, file mode) ->
 *     OPERATING_SYSTEM (17), another error -> UNKNOWN (999).
 *
 * No CUDA headers: the few NVML types are declared here with the driver's layout.
 * Build: gcc -shared -fPIC -O2 -Wall -o libnvidia-ml.so.1 -Wl,-soname,libnvidia-ml.so.1 fake_nvml.c -pthread
 */
#define _GNU_SOURCE /* CLOCK_BOOTTIME under -std=c99 too */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
typedef int nvmlEnableState_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_UNKNOWN = 999,
};

#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_VALUE_TYPE_UNSIGNED_INT 1
#define CAP_SYS_ADMIN_BIT 21
#define MAX_GPUS 16

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    signed int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

struct fake_gpu {
    unsigned int index;
    unsigned int power_limit_mw;
    int persistence;
    unsigned int gpu_locked_mhz[2]; /* 0,0 = not locked */
    unsigned int mem_locked_mhz[2];
};
typedef struct fake_gpu *nvmlDevice_t;

static const unsigned int MIN_LIMIT_MW = 200000, MAX_LIMIT_MW = 700000;
static const unsigned int MEM_CLOCKS_MHZ[] = {3201, 2201};
static const unsigned int MIN_GRAPHICS_MHZ = 345, MAX_GRAPHICS_MHZ = 1980, GRAPHICS_STEP_MHZ = 15;

static struct fake_gpu gpus[MAX_GPUS];
static unsigned int gpu_count;
static int init_refcount;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* ----- helpers ----- */

static void log_call(const char *function, nvmlReturn_t ret, const char *fmt, ...)
{
    const char *path = getenv("FAKE_NVML_LOG");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    char args[128] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    fprintf(f, "%d %s %s -> %d\n", (int)getpid(), function, args, ret);
    fclose(f);
}

#define RETURN(ret, function, ...)                          \
    do {                                                    \
        nvmlReturn_t ret_ = (ret);                          \
        log_call(function, ret_, __VA_ARGS__);              \
        return ret_;                                        \
    } while (0)

static int env_flag(const char *name)
{
    const char *value = getenv(name);
    return value && strcmp(value, "1") == 0;
}

static int has_cap_sys_admin(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long caps = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "CapEff:", 7) == 0)
            caps = strtoull(line + 7, NULL, 16);
    fclose(f);
    return (caps >> CAP_SYS_ADMIN_BIT) & 1;
}

static double boottime_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *state_path(void)
{
    const char *path = getenv("FAKE_NVML_STATE");
    return path && *path ? path : "/run/fake-nvml/state";
}

static void make_parent_dirs(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(dir, 0755);
        *p = '/';
    }
}

static void default_state(void)
{
    for (unsigned int i = 0; i < MAX_GPUS; i++) {
        memset(&gpus[i], 0, sizeof gpus[i]);
        gpus[i].index = i;
        gpus[i].power_limit_mw = MAX_LIMIT_MW;
        gpus[i].persistence = 1;
    }
}

static void load_state(void)
{
    FILE *f = fopen(state_path(), "r");
    char line[256];
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        struct fake_gpu g;
        if (sscanf(line, "gpu %u power_limit_mw %u persistence %d gpu_locked_mhz %u %u mem_locked_mhz %u %u",
                   &g.index, &g.power_limit_mw, &g.persistence, &g.gpu_locked_mhz[0], &g.gpu_locked_mhz[1],
                   &g.mem_locked_mhz[0], &g.mem_locked_mhz[1]) == 7 && g.index < MAX_GPUS)
            gpus[g.index] = g;
    }
    fclose(f);
}

/* Called with the lock held, after a setter changed the state. */
static void save_state(void)
{
    const char *path = state_path();
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    make_parent_dirs(path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "fake-nvml: cannot save state to %s: %s\n", tmp, strerror(errno));
        return;
    }
    for (unsigned int i = 0; i < gpu_count; i++) {
        const struct fake_gpu *g = &gpus[i];
        fprintf(f, "gpu %u power_limit_mw %u persistence %d gpu_locked_mhz %u %u mem_locked_mhz %u %u\n",
                g->index, g->power_limit_mw, g->persistence, g->gpu_locked_mhz[0], g->gpu_locked_mhz[1],
                g->mem_locked_mhz[0], g->mem_locked_mhz[1]);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        fprintf(stderr, "fake-nvml: cannot save state to %s: %s\n", path, strerror(errno));
}

static nvmlReturn_t check_device(nvmlDevice_t device)
{
    if (init_refcount == 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device < gpus || device >= gpus + gpu_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

static nvmlReturn_t check_setter(nvmlDevice_t device)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !has_cap_sys_admin())
        return NVML_ERROR_NO_PERMISSION;
    return ret;
}

static nvmlReturn_t copy_string(char *out, unsigned int length, const char *value)
{
    if (!out)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return NVML_SUCCESS;
}

static unsigned int instant_power_mw(const struct fake_gpu *g)
{
    unsigned int wiggle = (unsigned int)(boottime_s() * 1000) % 1000; /* changes every ms */
    unsigned int power = 74500 + wiggle + g->index * 100;
    return power < g->power_limit_mw ? power : g->power_limit_mw;
}

/* ----- library ----- */

/* The configured init failure (see the header), or NVML_SUCCESS. */
static nvmlReturn_t init_failure(void)
{
    const char *code = getenv("FAKE_NVML_INIT_ERROR");
    const char *ctl = getenv("FAKE_NVML_CTL");
    if (code && *code)
        return atoi(code);
    if (ctl && *ctl) {
        int fd = open(ctl, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            return NVML_SUCCESS;
        }
        if (errno == ENOENT)
            return NVML_ERROR_DRIVER_NOT_LOADED;
        return errno == EPERM || errno == EACCES ? NVML_ERROR_OPERATING_SYSTEM : NVML_ERROR_UNKNOWN;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    const char *count = getenv("FAKE_NVML_GPUS");
    nvmlReturn_t failure = init_failure();
    if (failure != NVML_SUCCESS)
        RETURN(failure, "nvmlInitWithFlags", "%u", flags);
    pthread_mutex_lock(&lock);
    if (init_refcount++ == 0) {
        gpu_count = count && *count ? (unsigned int)atoi(count) : 2;
        if (gpu_count > MAX_GPUS)
            gpu_count = MAX_GPUS;
        default_state();
        load_state();
    }
    pthread_mutex_unlock(&lock);
    RETURN(NVML_SUCCESS, "nvmlInitWithFlags", "%u", flags);
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    if (init_refcount == 0)
        ret = NVML_ERROR_UNINITIALIZED;
    else
        init_refcount--;
    pthread_mutex_unlock(&lock);
    RETURN(ret, "nvmlShutdown", "");
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    RETURN(copy_string(version, length, "580.159.04-fake"), "nvmlSystemGetDriverVersion", "");
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    RETURN(copy_string(version, length, "13.580.159.04-fake"), "nvmlSystemGetNVMLVersion", "");
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version)
{
    if (!version)
        return NVML_ERROR_INVALID_ARGUMENT;
    *version = 13000;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) { return nvmlSystemGetCudaDriverVersion(version); }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (init_refcount == 0)
        RETURN(NVML_ERROR_UNINITIALIZED, "nvmlDeviceGetCount_v2", "");
    if (!count)
        RETURN(NVML_ERROR_INVALID_ARGUMENT, "nvmlDeviceGetCount_v2", "");
    *count = gpu_count;
    RETURN(NVML_SUCCESS, "nvmlDeviceGetCount_v2", "");
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    if (init_refcount == 0)
        RETURN(NVML_ERROR_UNINITIALIZED, "nvmlDeviceGetHandleByIndex_v2", "%u", index);
    if (index >= gpu_count || !device)
        RETURN(NVML_ERROR_INVALID_ARGUMENT, "nvmlDeviceGetHandleByIndex_v2", "%u", index);
    *device = &gpus[index];
    RETURN(NVML_SUCCESS, "nvmlDeviceGetHandleByIndex_v2", "%u", index);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* ----- identity ----- */

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS)
        ret = copy_string(name, length, "NVIDIA H200");
    RETURN(ret, "nvmlDeviceGetName", "");
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    char value[64];
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS) {
        snprintf(value, sizeof value, "GPU-fa4e0000-0000-4000-8000-%012x", device->index);
        ret = copy_string(uuid, length, value);
    }
    RETURN(ret, "nvmlDeviceGetUUID", "");
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !pci)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        memset(pci, 0, sizeof *pci);
        pci->domain = 0;
        pci->bus = 0;
        pci->device = 6 + device->index;
        pci->pciDeviceId = 0x233510DE;
        pci->pciSubSystemId = 0x18BE10DE;
        snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
        snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    }
    RETURN(ret, "nvmlDeviceGetPciInfo_v3", "");
}

nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(device, pci); }
nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) { return nvmlDeviceGetPciInfo_v3(device, pci); }

/* ----- power limit ----- */

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !limit)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        *limit = device->power_limit_mw;
        pthread_mutex_unlock(&lock);
    }
    RETURN(ret, "nvmlDeviceGetPowerManagementLimit", "");
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    return nvmlDeviceGetPowerManagementLimit(device, limit);
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *limit)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !limit)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *limit = MAX_LIMIT_MW;
    RETURN(ret, "nvmlDeviceGetPowerManagementDefaultLimit", "");
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *min_mw, unsigned int *max_mw)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && (!min_mw || !max_mw))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        *min_mw = MIN_LIMIT_MW;
        *max_mw = MAX_LIMIT_MW;
    }
    RETURN(ret, "nvmlDeviceGetPowerManagementLimitConstraints", "");
}

nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit)
{
    nvmlReturn_t ret = check_setter(device);
    if (ret == NVML_SUCCESS && (limit < MIN_LIMIT_MW || limit > MAX_LIMIT_MW))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        device->power_limit_mw = limit;
        save_state();
        pthread_mutex_unlock(&lock);
    }
    RETURN(ret, "nvmlDeviceSetPowerManagementLimit", "%u", limit);
}

/* ----- persistence ----- */

nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !mode)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        *mode = device->persistence;
        pthread_mutex_unlock(&lock);
    }
    RETURN(ret, "nvmlDeviceGetPersistenceMode", "");
}

nvmlReturn_t nvmlDeviceSetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t mode)
{
    nvmlReturn_t ret = check_setter(device);
    if (ret == NVML_SUCCESS && mode != 0 && mode != 1)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        device->persistence = mode;
        save_state();
        pthread_mutex_unlock(&lock);
    }
    RETURN(ret, "nvmlDeviceSetPersistenceMode", "%d", mode);
}

/* ----- locked clocks ----- */

static nvmlReturn_t set_locked(nvmlDevice_t device, unsigned int *slot, unsigned int min_mhz, unsigned int max_mhz,
                               unsigned int lowest_mhz, unsigned int highest_mhz)
{
    nvmlReturn_t ret = check_setter(device);
    if (ret == NVML_SUCCESS && !(lowest_mhz <= min_mhz && min_mhz <= max_mhz && max_mhz <= highest_mhz))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        slot[0] = min_mhz;
        slot[1] = max_mhz;
        save_state();
        pthread_mutex_unlock(&lock);
    }
    return ret;
}

nvmlReturn_t nvmlDeviceSetGpuLockedClocks(nvmlDevice_t device, unsigned int min_mhz, unsigned int max_mhz)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS)
        ret = set_locked(device, device->gpu_locked_mhz, min_mhz, max_mhz, MIN_GRAPHICS_MHZ, MAX_GRAPHICS_MHZ);
    RETURN(ret, "nvmlDeviceSetGpuLockedClocks", "%u %u", min_mhz, max_mhz);
}

nvmlReturn_t nvmlDeviceResetGpuLockedClocks(nvmlDevice_t device)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS)
        ret = set_locked(device, device->gpu_locked_mhz, 0, 0, 0, 0);
    RETURN(ret, "nvmlDeviceResetGpuLockedClocks", "");
}

nvmlReturn_t nvmlDeviceSetMemoryLockedClocks(nvmlDevice_t device, unsigned int min_mhz, unsigned int max_mhz)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS)
        ret = set_locked(device, device->mem_locked_mhz, min_mhz, max_mhz, MEM_CLOCKS_MHZ[1], MEM_CLOCKS_MHZ[0]);
    RETURN(ret, "nvmlDeviceSetMemoryLockedClocks", "%u %u", min_mhz, max_mhz);
}

nvmlReturn_t nvmlDeviceResetMemoryLockedClocks(nvmlDevice_t device)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS)
        ret = set_locked(device, device->mem_locked_mhz, 0, 0, 0, 0);
    RETURN(ret, "nvmlDeviceResetMemoryLockedClocks", "");
}

nvmlReturn_t nvmlDeviceGetSupportedMemoryClocks(nvmlDevice_t device, unsigned int *count, unsigned int *clocks)
{
    const unsigned int n = sizeof MEM_CLOCKS_MHZ / sizeof MEM_CLOCKS_MHZ[0];
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !count)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && (*count < n || !clocks)) {
        *count = n;
        ret = NVML_ERROR_INSUFFICIENT_SIZE;
    } else if (ret == NVML_SUCCESS) {
        memcpy(clocks, MEM_CLOCKS_MHZ, sizeof MEM_CLOCKS_MHZ);
        *count = n;
    }
    RETURN(ret, "nvmlDeviceGetSupportedMemoryClocks", "");
}

nvmlReturn_t nvmlDeviceGetSupportedGraphicsClocks(nvmlDevice_t device, unsigned int mem_mhz, unsigned int *count,
                                                  unsigned int *clocks)
{
    const unsigned int n = (MAX_GRAPHICS_MHZ - MIN_GRAPHICS_MHZ) / GRAPHICS_STEP_MHZ + 1;
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !count)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS && mem_mhz != MEM_CLOCKS_MHZ[0] && mem_mhz != MEM_CLOCKS_MHZ[1])
        ret = NVML_ERROR_NOT_FOUND;
    if (ret == NVML_SUCCESS && (*count < n || !clocks)) {
        *count = n;
        ret = NVML_ERROR_INSUFFICIENT_SIZE;
    } else if (ret == NVML_SUCCESS) {
        for (unsigned int i = 0; i < n; i++)
            clocks[i] = MAX_GRAPHICS_MHZ - i * GRAPHICS_STEP_MHZ;
        *count = n;
    }
    RETURN(ret, "nvmlDeviceGetSupportedGraphicsClocks", "%u", mem_mhz);
}

/* ----- energy and power ----- */

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy_mj)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && env_flag("FAKE_NVML_NO_ENERGY"))
        ret = NVML_ERROR_NOT_SUPPORTED;
    if (ret == NVML_SUCCESS && !energy_mj)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS)
        *energy_mj = 2536141ULL + device->index * 1000ULL + (unsigned long long)(boottime_s() * 75000.0);
    RETURN(ret, "nvmlDeviceGetTotalEnergyConsumption", "");
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power_mw)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && !power_mw)
        ret = NVML_ERROR_INVALID_ARGUMENT;
    if (ret == NVML_SUCCESS) {
        pthread_mutex_lock(&lock);
        *power_mw = 75000 < device->power_limit_mw ? 75000 : device->power_limit_mw;
        pthread_mutex_unlock(&lock);
    }
    RETURN(ret, "nvmlDeviceGetPowerUsage", "");
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count, nvmlFieldValue_t *values)
{
    nvmlReturn_t ret = check_device(device);
    if (ret == NVML_SUCCESS && (count < 0 || !values))
        ret = NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; ret == NVML_SUCCESS && i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)(boottime_s() * 1e6);
        v->latencyUsec = 0;
        if (v->fieldId == NVML_FI_DEV_POWER_INSTANT && !env_flag("FAKE_NVML_NO_INSTANT")) {
            pthread_mutex_lock(&lock);
            v->value.uiVal = instant_power_mw(device);
            pthread_mutex_unlock(&lock);
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            v->nvmlReturn = NVML_SUCCESS;
        } else {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    RETURN(ret, "nvmlDeviceGetFieldValues", "%d", count);
}
