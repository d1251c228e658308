package android.widget;

import android.content.Context;
import android.view.View;

/** The SDK's AdapterView extends ViewGroup; the app uses only this member. */
public abstract class AdapterView<T extends Adapter> extends View {
  public AdapterView(Context context) {
    super(context);
    throw new RuntimeException("Stub!");
  }

  public int getSelectedItemPosition() {
    throw new RuntimeException("Stub!");
  }
}
