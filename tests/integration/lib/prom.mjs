// A small Prometheus text-format (0.0.4) parser for assertions on /metrics.

/**
 * Parses exposition text into { types: {family: type}, help: {family: text},
 * samples: [{ name, labels: {k: v}, value: Number }] }. Throws on a line it
 * cannot read, naming the line.
 */
export function parseProm(text) {
  const types = {};
  const help = {};
  const samples = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
      if (m && m[1] === 'TYPE') types[m[2]] = m[3];
      else if (m) help[m[2]] = m[3];
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`metrics line ${i + 1} is not valid exposition format: ${JSON.stringify(line)}`);
    const labels = {};
    if (m[3]) {
      const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;
      let p = 0;
      while (p < m[3].length) {
        re.lastIndex = p;
        const lm = re.exec(m[3]);
        if (!lm) throw new Error(`metrics line ${i + 1}: bad labels ${JSON.stringify(m[3])}`);
        labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        p = re.lastIndex;
      }
    }
    const v = m[4];
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : v === 'NaN' ? NaN : Number(v);
    if (Number.isNaN(value) && v !== 'NaN') throw new Error(`metrics line ${i + 1}: bad value ${v}`);
    samples.push({ name: m[1], labels, value });
  });
  return { types, help, samples };
}

/** Samples named name whose labels include every pair in match. */
export function find(parsed, name, match = {}) {
  return parsed.samples.filter(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
}

/** Sum of the values of find(...); 0 when there is none (a counter not yet created). */
export function sum(parsed, name, match = {}) {
  return find(parsed, name, match).reduce((a, s) => a + s.value, 0);
}
