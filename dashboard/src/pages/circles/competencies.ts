// Competencies as people type them: `python=4, code=3` (tag = level 1 to 5).

const TAG = /^[a-z0-9][a-z0-9_.+#-]{0,49}$/;

export type Levels = Record<string, number>;

/** The levels in `text`, or an error message saying what is wrong. */
export function parseLevels(text: string): Levels | string {
  const levels: Levels = {};
  for (const part of text.split(/[,\n]/)) {
    const item = part.trim();
    if (!item) continue;
    const [rawTag, rawLevel, ...rest] = item.split(/\s*[=:]\s*|\s+/);
    const tag = (rawTag ?? "").toLowerCase();
    const level = Number(rawLevel);
    if (rest.length || !TAG.test(tag) || !Number.isInteger(level) || level < 1 || level > 5) {
      return `“${item}” is not tag=level (a tag of lower-case letters and digits, a level from 1 to 5)`;
    }
    levels[tag] = level;
  }
  return levels;
}

export function formatLevels(levels: Record<string, number>): string {
  return Object.entries(levels)
    .map(([tag, level]) => `${tag}=${level}`)
    .join(", ");
}
