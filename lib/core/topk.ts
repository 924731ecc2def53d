// The k best classes of a row of scores: the one rule Model.predict, sp.classify and the HTTP
// service share. Highest score first, ties by lower index; NaN ranks below every number.
// Selection in place of a sort: no object per class (a 1000-class row made 1000 objects and
// sorted them for every image the service answered, which showed up in its GC pauses).

export interface TopEntry {
  index: number;
  score: number;
  label?: string;
}

/** The k best of scores[offset .. offset + count), with labels[index] where labels are given. */
export function topK(scores: ArrayLike<number>, k: number, labels?: readonly string[], offset = 0, count = scores.length - offset): TopEntry[] {
  const n = Math.max(0, Math.min(k, count));
  const idx: number[] = [];
  const val: number[] = [];
  const better = (s: number, i: number, t: number, j: number) => (Number.isNaN(t) ? !Number.isNaN(s) || i < j : s > t || (s === t && i < j));
  for (let i = 0; i < count && n > 0; i++) {
    const s = scores[offset + i];
    if (idx.length === n && !better(s, i, val[n - 1], idx[n - 1])) continue;
    let at = idx.length === n ? n - 1 : idx.length;
    if (idx.length < n) {
      idx.push(i);
      val.push(s);
    }
    while (at > 0 && better(s, i, val[at - 1], idx[at - 1])) {
      idx[at] = idx[at - 1];
      val[at] = val[at - 1];
      at--;
    }
    idx[at] = i;
    val[at] = s;
  }
  return idx.map((index, r) => (labels ? { index, score: val[r], label: labels[index] } : { index, score: val[r] }));
}
