package org.mlfsedge.demo;

import android.content.Context;
import android.content.res.AssetManager;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * Assets as real files: ExecuTorch's Module.load and the engine's mmap need a path, and an asset
 * inside the APK has none. Copied once into the app's private files folder (again when the size
 * differs, i.e. after an update shipped a new model), through a temp file + rename so an
 * interrupted copy is never mistaken for a model.
 */
final class AssetFiles {
  private AssetFiles() {}

  static File copy(Context context, String assetPath) throws IOException {
    AssetManager assets = context.getAssets();
    File target = new File(context.getFilesDir(), assetPath);
    File dir = target.getParentFile();
    if (dir != null && !dir.isDirectory() && !dir.mkdirs()) throw new IOException("cannot create " + dir);
    long size = 0;
    File tmp = new File(target.getPath() + ".tmp");
    try (InputStream in = assets.open(assetPath)) {
      // For an asset stream available() is its exact remaining length (AssetInputStream).
      if (target.isFile() && target.length() == in.available()) return target;
      try (OutputStream out = new FileOutputStream(tmp)) {
        byte[] buf = new byte[1 << 16];
        for (int n; (n = in.read(buf)) > 0; ) {
          out.write(buf, 0, n);
          size += n;
        }
      }
    }
    if (size == 0 || !tmp.renameTo(target)) {
      tmp.delete();
      throw new IOException("could not copy asset " + assetPath);
    }
    return target;
  }

  /** Copy the asset folder {@code dir} (files and sub-folders) into the files folder; returns its copy. */
  static File copyTree(Context context, String dir) throws IOException {
    String[] names = context.getAssets().list(dir);
    if (names == null || names.length == 0) throw new IOException("no asset folder " + dir);
    for (String name : names) {
      String path = dir + "/" + name;
      String[] children = context.getAssets().list(path);
      if (children != null && children.length > 0) copyTree(context, path); // list() of a file is empty
      else copy(context, path);
    }
    return new File(context.getFilesDir(), dir);
  }

  /** Asset names under {@code dir} ending in {@code suffix}, sorted. */
  static String[] list(Context context, String dir, String suffix) throws IOException {
    String[] all = context.getAssets().list(dir);
    java.util.List<String> out = new java.util.ArrayList<>();
    if (all != null) for (String name : all) if (name.endsWith(suffix)) out.add(dir + "/" + name);
    java.util.Collections.sort(out);
    return out.toArray(new String[0]);
  }
}
