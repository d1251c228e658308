package org.mlfsedge.demo;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * BERT uncased WordPiece tokenizer, matching Hugging Face's BertTokenizer (do_lower_case=True,
 * tokenize_chinese_chars=True, strip_accents following lowercase) on the project's shared test list.
 * Plain Java with no Android dependency, so the host JVM tests it against the Python tokenizer.
 */
public final class WordPieceTokenizer {
  public static final class Encoding {
    public final long[] inputIds;
    public final long[] attentionMask;
    public final int length; // tokens before padding

    Encoding(long[] inputIds, long[] attentionMask, int length) {
      this.inputIds = inputIds;
      this.attentionMask = attentionMask;
      this.length = length;
    }
  }

  private static final int MAX_CHARS_PER_WORD = 100;
  private final Map<String, Integer> vocab;
  private final int unkId, clsId, sepId, padId;

  public WordPieceTokenizer(Map<String, Integer> vocab) {
    this.vocab = vocab;
    this.unkId = require(vocab, "[UNK]");
    this.clsId = require(vocab, "[CLS]");
    this.sepId = require(vocab, "[SEP]");
    this.padId = require(vocab, "[PAD]");
  }

  /** Reads a vocab.txt (one token per line, id = line number). */
  public static WordPieceTokenizer fromVocab(InputStream in) throws IOException {
    Map<String, Integer> vocab = new HashMap<>();
    try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
      String line;
      int id = 0;
      while ((line = r.readLine()) != null) {
        vocab.put(line, id++);
      }
    }
    if (vocab.isEmpty()) throw new IOException("vocab file is empty");
    return new WordPieceTokenizer(vocab);
  }

  private static int require(Map<String, Integer> vocab, String token) {
    Integer id = vocab.get(token);
    if (id == null) throw new IllegalArgumentException("vocab has no " + token + " token");
    return id;
  }

  /** [CLS] tokens [SEP], truncated to maxLength; padded to maxLength when pad is true. */
  public Encoding encode(String text, int maxLength, boolean pad) {
    if (maxLength < 2) throw new IllegalArgumentException("maxLength must be at least 2");
    List<Integer> ids = new ArrayList<>();
    ids.add(clsId);
    for (String word : basicTokenize(text)) {
      for (int id : wordPiece(word)) {
        if (ids.size() >= maxLength - 1) break;
        ids.add(id);
      }
    }
    ids.add(sepId);
    int n = ids.size();
    int total = pad ? maxLength : n;
    long[] inputIds = new long[total];
    long[] mask = new long[total];
    for (int i = 0; i < total; i++) {
      inputIds[i] = i < n ? ids.get(i) : padId;
      mask[i] = i < n ? 1 : 0;
    }
    return new Encoding(inputIds, mask, n);
  }

  // --- BasicTokenizer: clean, split CJK, lowercase + strip accents, split punctuation ---------
  static List<String> basicTokenize(String text) {
    StringBuilder cleaned = new StringBuilder();
    text.codePoints().forEach(cp -> {
      if (cp == 0 || cp == 0xFFFD || isControl(cp)) return;
      if (isWhitespace(cp)) {
        cleaned.append(' ');
      } else if (isChinese(cp)) {
        cleaned.append(' ').appendCodePoint(cp).append(' ');
      } else {
        cleaned.appendCodePoint(cp);
      }
    });
    List<String> out = new ArrayList<>();
    for (String token : cleaned.toString().trim().split(" +")) {
      if (token.isEmpty()) continue;
      String lowered = stripAccents(token.toLowerCase(java.util.Locale.ROOT));
      out.addAll(splitOnPunctuation(lowered));
    }
    return out;
  }

  private static String stripAccents(String s) {
    String nfd = Normalizer.normalize(s, Normalizer.Form.NFD);
    StringBuilder b = new StringBuilder();
    nfd.codePoints().forEach(cp -> {
      if (Character.getType(cp) != Character.NON_SPACING_MARK) b.appendCodePoint(cp);
    });
    return b.toString();
  }

  private static List<String> splitOnPunctuation(String s) {
    List<String> out = new ArrayList<>();
    StringBuilder cur = new StringBuilder();
    s.codePoints().forEach(cp -> {
      if (isPunctuation(cp)) {
        if (cur.length() > 0) {
          out.add(cur.toString());
          cur.setLength(0);
        }
        out.add(new String(Character.toChars(cp)));
      } else {
        cur.appendCodePoint(cp);
      }
    });
    if (cur.length() > 0) out.add(cur.toString());
    return out;
  }

  // --- WordPiece: greedy longest match first, "##" continuation pieces ---------------------------
  List<Integer> wordPiece(String word) {
    List<Integer> ids = new ArrayList<>();
    if (word.codePointCount(0, word.length()) > MAX_CHARS_PER_WORD) {
      ids.add(unkId);
      return ids;
    }
    int start = 0;
    while (start < word.length()) {
      int end = word.length();
      Integer found = null;
      while (start < end) {
        String piece = (start > 0 ? "##" : "") + word.substring(start, end);
        Integer id = vocab.get(piece);
        if (id != null) {
          found = id;
          break;
        }
        end = word.offsetByCodePoints(end, -1);
      }
      if (found == null) {
        ids.clear();
        ids.add(unkId);
        return ids;
      }
      ids.add(found);
      start = end;
    }
    return ids;
  }

  // --- character classes, as in transformers' BasicTokenizer ------------------------------------
  private static boolean isWhitespace(int cp) {
    if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
    return Character.getType(cp) == Character.SPACE_SEPARATOR;
  }

  private static boolean isControl(int cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    int t = Character.getType(cp);
    return t == Character.CONTROL || t == Character.FORMAT || t == Character.PRIVATE_USE
        || t == Character.SURROGATE || t == Character.UNASSIGNED;
  }

  private static boolean isPunctuation(int cp) {
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) {
      return true;
    }
    switch (Character.getType(cp)) {
      case Character.CONNECTOR_PUNCTUATION:
      case Character.DASH_PUNCTUATION:
      case Character.START_PUNCTUATION:
      case Character.END_PUNCTUATION:
      case Character.INITIAL_QUOTE_PUNCTUATION:
      case Character.FINAL_QUOTE_PUNCTUATION:
      case Character.OTHER_PUNCTUATION:
        return true;
      default:
        return false;
    }
  }

  private static boolean isChinese(int cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF)
        || (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF)
        || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
  }
}
