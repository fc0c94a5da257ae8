/* libpeft — tokenizers behind one interface.
 *
 * Three kinds:
 *  - bytes:    256 ids, id = byte value. No BOS/EOS.
 *  - gpt2-bpe: GPT-2's byte-level BPE. Text is cut into pre-tokens by GPT-2's
 *              regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
 *              ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), each byte is mapped through
 *              GPT-2's byte-to-unicode alphabet and the pieces are merged by
 *              merge rank. Any byte string encodes and decodes back exactly
 *              (invalid UTF-8 included).
 *  - spm:      SentencePiece-style BPE with byte fallback, as llama2.c's run.c
 *              encodes: a dummy-prefix space when the text is non-empty, each
 *              UTF-8 code point mapped to its piece or else to the byte tokens
 *              "<0xXX>", then repeatedly merge the adjacent pair whose
 *              concatenation is a piece with the highest score (leftmost on
 *              ties).
 *
 * Hugging Face tokenizer.json files load as one of the last two
 * (peft_tokenizer_load_json), with their added tokens matched in the text.
 *
 * A tokenizer belongs to the context it was created with (errors and memory go
 * there) and, like the context, is not thread-safe. Encoding and decoding use
 * only temporary memory of their own (no arena).
 *
 * Decoding: ids become the bytes of their pieces (peft_tokenizer_piece).
 * Control tokens of an spm vocabulary (BOS, EOS and pieces of type 3) decode to
 * nothing; byte tokens to their byte; and the space that starts the piece right
 * after a BOS is dropped (it is the dummy prefix the encoder added). A
 * gpt2-bpe vocabulary has no control tokens: "<|endoftext|>" decodes to its
 * text.
 */
#ifndef PEFT_TOKENIZER_H
#define PEFT_TOKENIZER_H

#include "core.h"
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct peft_tokenizer peft_tokenizer;

/* Kinds. Values are fixed; new ones are only appended. */
typedef enum peft_tokenizer_kind {
    PEFT_TOKENIZER_BYTES = 0,
    PEFT_TOKENIZER_GPT2_BPE = 1,
    PEFT_TOKENIZER_SPM = 2,
    PEFT_TOKENIZER_KIND_COUNT
} peft_tokenizer_kind;

/* SentencePiece / GGUF token types (tokenizer.ggml.token_type). */
typedef enum peft_token_type {
    PEFT_TOKEN_NORMAL = 1,
    PEFT_TOKEN_UNKNOWN = 2,
    PEFT_TOKEN_CONTROL = 3,
    PEFT_TOKEN_USER_DEFINED = 4,
    PEFT_TOKEN_UNUSED = 5,
    PEFT_TOKEN_BYTE = 6
} peft_token_type;

/* ---- constructors; destroy with peft_tokenizer_destroy ---- */

/* 256 ids, id = byte. */
PEFT_API peft_status peft_tokenizer_create_bytes(peft_ctx *ctx, peft_tokenizer **out);

/* GPT-2 byte-level BPE from Hugging Face / OpenAI files: vocab_json_path is
 * vocab.json or encoder.json (a JSON object token -> id with ids exactly
 * 0..n-1), merges_path is merges.txt or vocab.bpe (an optional "#version"
 * first line, then one "a b" merge per line in priority order). BOS and EOS
 * are "<|endoftext|>" when the vocabulary has it, else -1. A corrupt file gives
 * PEFT_ERR_FORMAT naming the file (and line for merges); a missing one
 * PEFT_ERR_IO. */
PEFT_API peft_status peft_tokenizer_load_gpt2(peft_ctx *ctx, const char *vocab_json_path, const char *merges_path,
                                              peft_tokenizer **out);

/* The same byte-level BPE from in-memory arrays (e.g. a GGUF "gpt2"
 * vocabulary): n_tokens token strings (tokens[i] holds token_lens[i] bytes, in
 * the byte-level alphabet, id = index, all distinct, every one of the 256 byte
 * characters present) and n_merges merges "a b" (merge_lens[i] bytes, split at
 * the first space after the first byte) whose parts and concatenation are
 * tokens. bos / eos are ids or -1 for none. The arrays are copied. */
PEFT_API peft_status peft_tokenizer_create_bpe(peft_ctx *ctx, size_t n_tokens, const char *const *tokens,
                                               const size_t *token_lens, size_t n_merges, const char *const *merges,
                                               const size_t *merge_lens, int32_t bos, int32_t eos,
                                               peft_tokenizer **out);

/* A llama2.c tokenizer.bin (int32 max_token_length, then vocab_size records of
 * f32 score, int32 len, len bytes). vocab_size is not in the file: it comes
 * from the model header. Spaces are stored as ' '; ids 0, 1, 2 are <unk>, BOS
 * and EOS; "<0xXX>" pieces are the byte-fallback tokens. */
PEFT_API peft_status peft_tokenizer_load_llama2c(peft_ctx *ctx, const char *path, size_t vocab_size,
                                                 peft_tokenizer **out);

/* SentencePiece-style BPE with byte fallback from in-memory arrays (e.g. a GGUF
 * "llama" vocabulary): n pieces (pieces[i] holds lens[i] bytes, id = index,
 * non-empty pieces distinct), finite scores, and types (peft_token_type values)
 * or NULL to infer them (bos/eos control, unk unknown, "<0xXX>" byte, the rest
 * normal). Only normal and user-defined pieces are produced by merges; byte
 * pieces must read "<0xXX>". bos, eos, unk are ids or -1. space_is_u2581 = 1
 * when the pieces spell a space as U+2581 "▁" (GGUF, SentencePiece), 0 when
 * as ' ' (llama2.c); with 1, a literal "▁" in the text reads as a space, as in
 * SentencePiece. The arrays are copied. */
PEFT_API peft_status peft_tokenizer_create_spm(peft_ctx *ctx, size_t n, const char *const *pieces, const size_t *lens,
                                               const float *scores, const int32_t *types, int32_t bos, int32_t eos,
                                               int32_t unk, int space_is_u2581, peft_tokenizer **out);

/* A Hugging Face tokenizer.json with model.type "BPE", in one of two shapes:
 *  - byte-level (GPT-2, RoBERTa): pre_tokenizer ByteLevel (use_regex true,
 *    add_prefix_space honoured), or a Sequence of Split by GPT-2's regex
 *    (behavior Isolated) and ByteLevel; decoder ByteLevel. Gives a gpt2-bpe
 *    tokenizer. Other Split patterns (Llama 3, Qwen, ...) are
 *    PEFT_ERR_UNSUPPORTED naming the pattern. model.ignore_merges is honoured.
 *  - SentencePiece-style (Llama 1/2, Mistral): model.byte_fallback true,
 *    normalizer Prepend("▁") and Replace(" " -> "▁") or a Metaspace
 *    pre-tokenizer (prepend_scheme always / first / never, split), decoder
 *    Replace("▁" -> " ") / ByteFallback / Fuse / Strip(" ", 1, 0) or
 *    Metaspace. Gives an spm tokenizer that merges by the file's merge rank
 *    (the pair listed first merges first, leftmost on ties), as Hugging
 *    Face's BPE does, not by score. Decoding drops one space at the start of
 *    the output when the decoder strips it (Strip start 1, Metaspace), in
 *    place of the space after BOS.
 * model.vocab is an object token -> id and model.merges a list of "a b"
 * strings or ["a", "b"] pairs, in priority order. added_tokens extend or
 * mark vocabulary entries; encode finds them in the text first (leftmost,
 * then longest; lstrip / rstrip / single_word honoured; matched on the raw
 * text even when "normalized") and runs the model on the text between them,
 * each piece on its own (so each gets its own dummy prefix where the
 * normalizer / pre-tokenizer says). Special added tokens of the
 * SentencePiece shape decode to nothing, like control tokens; the other kind
 * decodes them to their text. BOS / EOS come from the post_processor
 * (TemplateProcessing "single" starting / ending with a special token,
 * Roberta/BertProcessing cls / sep), else from the first added token among
 * "<s>", "<|begin_of_text|>", "<|endoftext|>" (BOS) and "</s>",
 * "<|end_of_text|>", "<|endoftext|>" (EOS), else -1.
 * Ids of model.vocab and added_tokens together must be unique and run from 0
 * to n-1; merges must name tokens whose concatenation is a token. Errors:
 * PEFT_ERR_FORMAT naming the file and the item (invalid JSON with its line,
 * model.merges[i], duplicate or out-of-range ids), PEFT_ERR_UNSUPPORTED
 * naming what is not supported (model.type, normalizer, pre-tokenizer,
 * decoder), PEFT_ERR_IO for a missing file. */
PEFT_API peft_status peft_tokenizer_load_json(peft_ctx *ctx, const char *path, peft_tokenizer **out);

/* NULL is a no-op. */
PEFT_API void peft_tokenizer_destroy(peft_tokenizer *tok);

/* ---- use ---- */

/* Encode len bytes of text (any bytes; text may be NULL when len is 0) into
 * ids[0..*n_out), with the BOS / EOS id first / last when asked (an error when
 * the tokenizer has none). If cap is smaller than the count, returns
 * PEFT_ERR_INVALID_ARG with the needed count in *n_out (ids may be NULL when
 * cap is 0, to ask for the count; ids then holds an unspecified prefix). */
PEFT_API peft_status peft_tokenizer_encode(peft_tokenizer *tok, const char *text, size_t len, int add_bos, int add_eos,
                                           int32_t *ids, size_t cap, size_t *n_out);

/* Decode n ids into buf: *len_out bytes followed by a NUL, so cap must be at
 * least *len_out + 1. If it is smaller, returns PEFT_ERR_INVALID_ARG with the
 * needed length (without the NUL) in *len_out (buf may be NULL when cap is 0).
 * An id outside [0, n_vocab) is PEFT_ERR_INVALID_ARG. */
PEFT_API peft_status peft_tokenizer_decode(peft_tokenizer *tok, const int32_t *ids, size_t n, char *buf, size_t cap,
                                           size_t *len_out);

/* The bytes token `id` decodes to on its own (not NUL-terminated; borrowed,
 * valid as long as the tokenizer): the byte-level alphabet undone for
 * gpt2-bpe, U+2581 turned into ' ' and "<0xXX>" into the byte for spm, ""
 * for spm control tokens. */
PEFT_API peft_status peft_tokenizer_piece(const peft_tokenizer *tok, int32_t id, const char **piece, size_t *len);

/* The id of a token as the vocabulary spells it (e.g. "Ġworld", "▁Once",
 * "<0x0A>"), or PEFT_ERR_NOT_FOUND. */
PEFT_API peft_status peft_tokenizer_token_id(const peft_tokenizer *tok, const char *token, size_t len, int32_t *id);

/* Vocabulary size (0 for NULL). */
PEFT_API size_t peft_tokenizer_n_vocab(const peft_tokenizer *tok);
/* BOS / EOS ids, -1 when the tokenizer has none (or tok is NULL). */
PEFT_API int32_t peft_tokenizer_bos(const peft_tokenizer *tok);
PEFT_API int32_t peft_tokenizer_eos(const peft_tokenizer *tok);
/* The kind (PEFT_TOKENIZER_KIND_COUNT for NULL) and its name: "bytes",
 * "gpt2-bpe", "spm" ("?" for an unknown value). */
PEFT_API peft_tokenizer_kind peft_tokenizer_get_kind(const peft_tokenizer *tok);
PEFT_API const char *peft_tokenizer_kind_name(peft_tokenizer_kind kind);
PEFT_API const char *peft_tokenizer_name(const peft_tokenizer *tok);

/* The tokenizer stored in a GGUF's tokenizer.ggml.* metadata: model "llama"
 * (SentencePiece-style BPE with byte fallback, scores and token types) or
 * "gpt2" (byte-level BPE with merges). PEFT_ERR_NOT_FOUND when the file has
 * none. */
PEFT_API peft_status peft_tokenizer_from_gguf(peft_ctx *ctx, const peft_gguf *g, peft_tokenizer **out);

/* Load a tokenizer from a path, detected from the contents: a GGUF file, a
 * Hugging Face tokenizer.json (a file starting with '{'), a llama2.c
 * tokenizer.bin (its size is counted from the records), or a directory
 * holding tokenizer.json, else vocab.json + merges.txt (or encoder.json +
 * vocab.bpe). */
PEFT_API peft_status peft_tokenizer_load(peft_ctx *ctx, const char *path, peft_tokenizer **out);

#ifdef __cplusplus
}
#endif
#endif /* PEFT_TOKENIZER_H */
