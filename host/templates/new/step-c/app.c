/* {{name}}: a typed wharf step in C. `describe` tells wharf its parameters and outputs, so a
 * pipeline that misuses it is refused before anything runs; `run` does the work.
 *
 * The types and host calls come from gen/typed_step.h, generated from wit/ by build.sh.
 * What a step returns is freed by the bindings after wharf has read it, so every string
 * and list handed back is allocated (text() below, calloc). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "typed_step.h"

/* A string the bindings may free. */
static typed_step_string_t text(const char *s) {
    typed_step_string_t t;
    typed_step_string_dup(&t, s);
    return t;
}

/* The text parameter `name` of the run, or NULL. WIT strings are not NUL-terminated. */
static const typed_step_string_t *param_text(const wharf_step_types_context_t *ctx, const char *name) {
    for (size_t i = 0; i < ctx->params.len; i++) {
        const typed_step_string_t *key = &ctx->params.ptr[i].f0;
        const wharf_step_types_value_t *value = &ctx->params.ptr[i].f1;
        if (key->len == strlen(name) && memcmp(key->ptr, name, key->len) == 0 &&
            value->tag == WHARF_STEP_TYPES_VALUE_TEXT) {
            return &value->val.text;
        }
    }
    return NULL;
}

static void log_info(const char *message) {
    typed_step_string_t line = text(message);
    wharf_step_log_write(WHARF_STEP_LOG_LEVEL_INFO, &line);
    typed_step_string_free(&line);
}

void exports_wharf_step_step_describe(wharf_step_types_step_info_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->name = text("{{name}}");
    ret->version = text("0.1.0");
    ret->summary = text("Greets someone");

    ret->params.len = 1;
    ret->params.ptr = (wharf_step_types_param_spec_t *)calloc(1, sizeof *ret->params.ptr);
    ret->params.ptr[0] = (wharf_step_types_param_spec_t){
        .name = text("name"),
        .type = WHARF_STEP_TYPES_PARAM_TYPE_TEXT,
        .description = text("Who to greet"),
        .required = true,
    };

    ret->outputs.len = 1;
    ret->outputs.ptr = (wharf_step_types_output_spec_t *)calloc(1, sizeof *ret->outputs.ptr);
    ret->outputs.ptr[0] = (wharf_step_types_output_spec_t){
        .name = text("greeting"),
        .description = text("What was said"),
    };
}

bool exports_wharf_step_step_run(wharf_step_types_context_t *ctx, wharf_step_types_outputs_t *ret,
                                 wharf_step_types_step_error_t *err) {
    const typed_step_string_t *name = param_text(ctx, "name");
    if (name == NULL || name->len == 0) {
        err->kind = WHARF_STEP_TYPES_ERROR_KIND_INVALID_INPUT;
        err->message = text("`name` is empty");
        wharf_step_types_context_free(ctx);
        return false;
    }
    char greeting[256];
    snprintf(greeting, sizeof greeting, "hello, %.*s", (int)name->len, (const char *)name->ptr);
    wharf_step_types_context_free(ctx);

    log_info(greeting);
    ret->len = 1;
    ret->ptr = (typed_step_tuple2_string_string_t *)calloc(1, sizeof *ret->ptr);
    ret->ptr[0].f0 = text("greeting");
    ret->ptr[0].f1 = text(greeting);
    return true;
}
