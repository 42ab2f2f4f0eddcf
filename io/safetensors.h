/* safetensors: Hugging Face's tensor file format (jansson), docs/interop.md.
 *
 * A file is an 8-byte little-endian header length n, n bytes of JSON
 * ({"__metadata__": {...}, NAME: {"dtype", "shape", "data_offsets": [begin,
 * end]}, ...}, offsets relative to the data after the header), then the raw
 * little-endian data. The reader checks everything before it trusts a byte:
 * the header length against the file, JSON syntax (line and column),
 * duplicate names, dtype (F32, F16 and BF16 are read, as fp32), shape
 * against the byte length, offsets inside the data, and that the tensors
 * tile the data exactly (no overlap, no gap), as the safetensors library
 * requires. A sharded checkpoint (model.safetensors.index.json naming
 * model-0000x-of-0000y.safetensors files) reads as one set. The writer is
 * deterministic: names sorted, compact JSON, {"__metadata__": {"format":
 * "pt"}}, the header padded with spaces to a multiple of 8, fp32 data. */
#ifndef FSPO_SAFETENSORS_H
#define FSPO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data of file `file` */
    int file;            /* index into StSet.paths */
} StTensor;

typedef struct {
    int n, cap;
    StTensor *t;
    int n_files;
    char **paths;        /* each file's path, for messages and reads */
    uint64_t *data_off;  /* where each file's data starts (8 + header length) */
} StSet;

/* Reads the header of one .safetensors file into s (appending to what s
 * holds; a name already in s is an error). 0, or -1 with err naming the
 * file and the tensor or key. */
int st_open_file(StSet *s, const char *path, char *err, size_t errlen);
/* A model directory: DIR/model.safetensors, or DIR/model.safetensors.index.json
 * and the shards its weight_map names (plain file names in DIR; every
 * tensor must be in the shard the map says, and every shard tensor in the map). */
int st_open_dir(StSet *s, const char *dir, char *err, size_t errlen);
void st_close(StSet *s);
const StTensor *st_find(const StSet *s, const char *name);
/* Number of elements of t (the product of its shape). */
uint64_t st_numel(const StTensor *t);
/* Reads t into dst (n floats, n == st_numel(t)), converting F16/BF16 to fp32. */
int st_read_f32(const StSet *s, const StTensor *t, float *dst, size_t n, char *err, size_t errlen);

/* One tensor to write: fp32, row-major. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
    const float *data;
} StWriteTensor;

/* Writes the tensors (any order; the file lists them sorted by name) to
 * path. 0, or -1 with err. */
int st_write(const char *path, const StWriteTensor *t, int n, char *err, size_t errlen);

#endif
