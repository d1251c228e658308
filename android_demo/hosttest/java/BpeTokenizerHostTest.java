import java.io.FileInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import org.mlfsedge.demo.ByteLevelBpeTokenizer;

/**
 * Host-JVM check of the app's byte-level BPE tokenizer: args = tokenizer.json, sentences file (one
 * per line, JSON-free: a literal "\n" in a line stands for a newline). Prints per sentence "IDS ..."
 * (encode), "TEXT hex" (decode of those ids, UTF-8 as hex) and "STREAM ok|bad" (every prefix's
 * decodeComplete is a prefix of the full text), which the Python test compares with tokenizers.
 */
public final class BpeTokenizerHostTest {
  public static void main(String[] args) throws Exception {
    ByteLevelBpeTokenizer tok;
    try (FileInputStream in = new FileInputStream(args[0])) {
      tok = ByteLevelBpeTokenizer.fromTokenizerJson(in);
    }
    List<String> lines = Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8);
    StringBuilder out = new StringBuilder();
    out.append("VOCAB ").append(tok.vocabSize()).append(' ').append(tok.tokenId("<|im_end|>")).append('\n');
    for (String line : lines) {
      int[] ids = tok.encode(line.replace("\\n", "\n"));
      out.append("IDS");
      for (int id : ids) out.append(' ').append(id);
      out.append('\n');
      String text = tok.decode(ids);
      out.append("TEXT ").append(hex(text.getBytes(StandardCharsets.UTF_8))).append('\n');
      boolean ok = true;
      for (int n = 0; n <= ids.length; n++) {
        String part = tok.decodeComplete(Arrays.copyOf(ids, n));
        ok &= text.startsWith(part);
      }
      out.append("STREAM ").append(ok ? "ok" : "bad").append('\n');
    }
    System.out.print(out);
  }

  static String hex(byte[] bytes) {
    StringBuilder sb = new StringBuilder();
    for (byte b : bytes) sb.append(String.format("%02x", b & 0xFF));
    return sb.toString();
  }
}
