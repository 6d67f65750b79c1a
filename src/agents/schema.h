/*
 * schema.h - validates tool arguments against the tool's JSON Schema.
 *
 * The subset agent tools use (JSON Schema 2020-12 keywords): type (string or
 * list), properties, required, additionalProperties (boolean or schema),
 * items, enum, const, minimum/maximum, exclusiveMinimum/Maximum,
 * minLength/maxLength, minItems/maxItems, pattern is accepted but not
 * checked. Unknown keywords are ignored, as the specification says. The
 * first problem is reported as "path: what is wrong", for the model to fix
 * its call.
 */
#ifndef AH_AGENTS_SCHEMA_H
#define AH_AGENTS_SCHEMA_H

#include <jansson.h>

#include "core/buf.h"

/** 0 when value satisfies schema; -EINVAL with a message in err otherwise. */
int ah_schema_validate(const json_t *schema, const json_t *value, ah_buf_t *err);

#endif
